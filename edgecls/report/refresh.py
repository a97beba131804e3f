"""The one call each stage makes at its end: bring RUN/report.html up to date.

``write_report(run)`` collects what is missing or stale (host side, TensorFlow:
:mod:`edgecls.report.collect`), assembles the page's content from the run's files
(:mod:`edgecls.report.assemble`), draws it (:mod:`edgecls.report.page`) and writes it atomically.
With ``collect=False`` nothing is recomputed and TensorFlow is never imported (``deploy``): the
page is redrawn from what the run holds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_text
from edgecls.core.rundir import RunDir


def write_report(run_path: str | os.PathLike | RunDir, *, collect: bool = True,
                 log: Callable[[str], None] = lambda s: None) -> Path:
    """Write RUN/report.html (and refresh RUN/report/ when ``collect``); returns the page's path.

    What cannot be collected (the photos moved, no held-out images) is said on the page, not raised:
    the page is still written. Raises :class:`EdgeclsError` only when ``run_path`` is not a run.
    """
    from edgecls.report.assemble import assemble
    from edgecls.report.page import render

    run = run_path if isinstance(run_path, RunDir) else RunDir.open(run_path)
    problems = []
    if collect:
        from edgecls.report.collect import collect as collect_run

        try:
            collect_run(run, log=log)
        except EdgeclsError as err:
            problems.append(f"pictures and predictions could not be updated: {err}")
    content = assemble(run)
    content.notes = problems + content.notes
    return atomic_write_text(run.report_html, render(content))
