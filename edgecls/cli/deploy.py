"""``edgecls deploy``: from the host to the Pi in one command (SSH, verify, bench, results home)."""

from __future__ import annotations

from pathlib import Path

import click

from edgecls.cli.options import config_options
from edgecls.cli.report import refresh_after
from edgecls.cli.ssh import ssh_config_from, ssh_options
from edgecls.core.device_config import DeployConfig


def register(group: click.Group) -> None:
    group.add_command(deploy)
    group.add_command(bench_compare)


@click.command()
@click.argument("source", metavar="MODEL_OR_RUN", type=click.Path(exists=True))
@click.argument("target", metavar="USER@HOST[:DIR]")
@config_options(DeployConfig, "mode", "imx500", "install", "wheel", "venv", "python", "service", "unit", "service_env", "verify",
                "threads", "runs", "warmup")
@ssh_options
def deploy(source: str, target: str, **options) -> None:
    """Copy MODEL_OR_RUN's bundle to a device over SSH, verify it there, benchmark it, bring the results back.

    The bundle (model, labels.txt, card, golden set) is copied to a temp name, checked by sha256
    and by 'edgecls verify' on the device, and only then renamed into place. The device's bench
    JSON lands in RUN/device/HOST/ and is printed beside this host's.
    """
    from edgecls.deploy.compare import side_by_side
    from edgecls.deploy.deploy import deploy as run_deploy

    ssh = ssh_config_from(options)
    cfg = DeployConfig(source=source, target=target, ssh=ssh, **options)
    if cfg.imx500:
        from edgecls.cli.imx500 import deploy_imx500_cmd

        return deploy_imx500_cmd(cfg)
    result = run_deploy(cfg, echo=click.echo)
    if result.installed:
        click.echo(f"Installed on {result.target.host}: {result.installed} in {result.venv}")
    if result.verify:
        v = result.verify
        click.echo(f"Verify on {result.target.host}: PASSED, {v['n_images']} golden images, top-1 agreement "
                   f"{v['top1_agreement']:.4f}, outputs {'bit-identical' if v['bit_identical'] else 'differ'} "
                   f"(host {v['host_runtime']}, device {v['device_runtime']})")
    click.echo(side_by_side([("host", result.host_bench), (result.target.host, result.device_bench)]))
    for name in ("verify", "device_bench", "host_bench", "deploy"):
        if name in result.files:
            click.echo(f"Wrote {result.files[name]}")
    refresh_after(result.files["deploy"].parents[2], collect=False)  # RUN/device/HOST/deploy_*.json; no TensorFlow


@click.command("bench-compare")
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def bench_compare(reports: tuple[str, ...]) -> None:
    """Put several 'edgecls bench --json' reports (e.g. a Pi 4's and a Pi 5's) side by side.

    Columns are named by the board (or CPU) each report was measured on; models line up by file name.
    """
    from edgecls.deploy.compare import machine_label, read_report, side_by_side

    loaded = [read_report(r) for r in reports]
    titles = [machine_label(r) for r in loaded]
    if len(set(titles)) < len(titles):  # the same board twice: tell the columns apart by file
        titles = [f"{t} ({Path(p).name})" for t, p in zip(titles, reports)]
    click.echo(side_by_side(list(zip(titles, loaded))))
