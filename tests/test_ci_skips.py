"""tests/ci_skips.py: a skip fails the run under CI=true, and only there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.parametrize("ci, outcome", [("true", "1 error"), ("", "1 skipped")])  # a skipif skips in setup
def test_a_skip_is_a_failure_only_under_ci(tmp_path, ci, outcome):
    (tmp_path / "test_needs_a_broker.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.skipif(True, reason='needs mosquitto')\n"
        "def test_mqtt():\n    pass\n")
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(HERE)}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "ci_skips", "-p", "no:cacheprovider",
                        "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert outcome in r.stdout, r.stdout + r.stderr
    assert (r.returncode != 0) == bool(ci)
    if ci:
        assert "skipped under CI=true, where nothing may skip: needs mosquitto" in r.stdout
