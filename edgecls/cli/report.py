"""``edgecls report`` and ``edgecls explain``: the run's page, and heatmaps over a user's own photos.

:func:`refresh_after` is the one call the other stages make at their end (train, prune, export,
parity, deploy): the page is brought up to date there. TensorFlow is imported inside the commands
only, and not at all when a stage redraws without collecting (deploy).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import click

from edgecls.cli.options import config_options
from edgecls.core.config import ExplainConfig, ReportConfig

_RUN = click.Path(path_type=Path)  # existence is checked by RunDir.open with a better message


def register(group: click.Group) -> None:
    """Add this area's commands to the edgecls group."""
    group.add_command(report_cmd)
    group.add_command(explain_cmd)


def refresh_after(run: Optional[Path | str], *, collect: bool = True,
                  wrote: Optional[Path | str] = None) -> Optional[Path]:
    """Bring RUN/report.html up to date after a stage; a failure here is a warning, never the stage's failure
    (the stage's own files are already written and fine).

    Nothing to do when ``run`` is None or not a run folder, or when ``wrote`` (where the stage wrote, when
    it was told where: export --out, parity --json) lies outside the run: nothing the page shows changed.
    """
    from edgecls.core.errors import EdgeclsError
    from edgecls.core.rundir import RunDir

    if run is None or not (Path(run) / "config.json").is_file() or not _inside(wrote, Path(run)):
        return None
    try:
        from edgecls.report.refresh import write_report

        page = write_report(RunDir.open(run), collect=collect)
    except (EdgeclsError, OSError) as err:
        click.echo(f"Warning: the report was not updated: {err}", err=True)
        return None
    except Exception as err:  # noqa: BLE001 - the stage succeeded; the page must not turn that into a failure
        if os.environ.get("EDGECLS_DEBUG", "") not in ("", "0"):
            raise
        click.echo(f"Warning: the report was not updated: unexpected {type(err).__name__}: {err} "
                   "(EDGECLS_DEBUG=1 for the traceback)", err=True)
        return None
    click.echo(f"report:  {page}")
    return page


def _inside(wrote: Optional[Path | str], run: Path) -> bool:
    return wrote is None or Path(run).resolve() in Path(wrote).resolve().parents


@click.command("report")
@click.argument("run", type=_RUN)
@config_options(ReportConfig, "collect")
def report_cmd(run: Path, collect: bool) -> None:
    """Write RUN/report.html: data, training, mistakes, Grad-CAM heatmaps, int8 changes, devices, confidence.

    One self-contained file (pictures inside it) that opens from the file system, offline. train, prune,
    export, parity and deploy keep it up to date; run this for a run made before the report existed, or
    after its photos moved back.
    """
    from edgecls.report.refresh import write_report

    cfg = ReportConfig(run=str(run), collect=collect)
    page = write_report(cfg.run, collect=cfg.collect, log=lambda s: click.echo(f"  {s}"))
    click.echo(f"Wrote {page} ({page.stat().st_size / 1e6:.2f} MB)")


@click.command("explain")
@click.argument("run", type=_RUN)
@click.argument("images", metavar="IMAGE_OR_DIR", type=click.Path(path_type=Path))
@config_options(ExplainConfig, "out", "layer")
def explain_cmd(run: Path, images: Path, **options) -> None:
    """Grad-CAM heatmaps of RUN's float model over IMAGE_OR_DIR: where it looked to decide.

    Each photo is decoded and resized by the run's own rules, scored, and written as an overlay
    (red: the regions that raised the predicted class most) with the answer on top.
    """
    from edgecls.report.explain import check_explain_args, explain

    cfg = ExplainConfig(run=str(run), images=str(images), **options)
    _, folder = check_explain_args(cfg)  # fails in a fraction of a second, before TensorFlow loads
    done = explain(cfg, log=lambda s: click.echo(s, err=s.startswith("skipped")))
    click.echo(f"Wrote {len(done)} overlay{'s' if len(done) != 1 else ''} to {folder}")
