"""The model's report page, when one lies beside it: the camera's web view links to it.

``edgecls train``/``export`` write RUN/report.html (:mod:`edgecls.report`, host side); a model
run straight from RUN/export/ finds it one folder up, a model copied with its report finds it in
its own folder. Looked up on each request, so a page refreshed on the host shows at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from edgecls.core.rundir import REPORT_HTML


def report_beside(model: Optional[str | os.PathLike]) -> Optional[Path]:
    """``report.html`` in the model's folder, else in the run folder above ``RUN/export/``; None when neither."""
    if not model:
        return None
    folder = Path(model).parent
    own = folder / REPORT_HTML
    if own.is_file():
        return own
    run = folder.parent
    # Only a run's page: a report.html in some unrelated parent folder is not this model's.
    if (run / "config.json").is_file() and (run / REPORT_HTML).is_file():
        return run / REPORT_HTML
    return None
