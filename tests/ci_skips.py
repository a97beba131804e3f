"""Under ``CI=true`` a skip is a failure (a pytest plugin, registered by conftest.py).

CI provides every real part a test needs (Debian packages, ``../shared``, the package registry): a test
that skips there would turn a broken feature into a green run. docs/testing.md lists what each needs.
"""

from __future__ import annotations

import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where nothing may skip: {reason}"
