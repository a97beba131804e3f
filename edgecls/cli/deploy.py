"""``edgecls deploy``: from the host to the Pi in one command (SSH, verify, bench, results home)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from edgecls.cli.device import parse_threads
from edgecls.cli.ssh import ssh_config_from, ssh_options
from edgecls.core.config import DeployConfig, field_help


def register(group: click.Group) -> None:
    group.add_command(deploy)
    group.add_command(bench_compare)


def _d(name: str) -> str:
    return field_help(DeployConfig, name)


@click.command()
@click.argument("source", metavar="MODEL_OR_RUN", type=click.Path(exists=True))
@click.argument("target", metavar="USER@HOST[:DIR]")
@click.option("--mode", default=DeployConfig.mode, show_default=True, help=_d("mode"))
@click.option("--imx500", is_flag=True, help="Deploy the AI Camera export: copy model_imx500.packerOut.zip, run imx500-package on the Pi, place network.rpk (no verify or bench: the network runs on the sensor).")
@click.option("--install", is_flag=True, help=_d("install"))
@click.option("--wheel", type=click.Path(exists=True, dir_okay=False), default=None, help=_d("wheel"))
@click.option("--venv", default=None, help=_d("venv"))
@click.option("--python", default=DeployConfig.python, show_default=True, help=_d("python"))
@click.option("--service", is_flag=True, help=_d("service"))
@click.option("--unit", default=DeployConfig.unit, show_default=True, help=_d("unit"))
@click.option("--service-env", default=DeployConfig.service_env, show_default=True, help=_d("service_env"))
@click.option("--no-verify", is_flag=True, help="Do not run 'edgecls verify' on the device (no golden set needed).")
@click.option("--threads", default="1", show_default=True, callback=parse_threads, help=_d("threads") + " Comma-separated.")
@click.option("--runs", type=click.IntRange(1), default=DeployConfig.runs, show_default=True, help=_d("runs"))
@click.option("--warmup", type=click.IntRange(0), default=DeployConfig.warmup, show_default=True, help=_d("warmup"))
@ssh_options
def deploy(source: str, target: str, mode: str, imx500: bool, install: bool, wheel: Optional[str], venv: Optional[str], python: str,
           service: bool, unit: str, service_env: str, no_verify: bool, threads: tuple[int, ...], runs: int,
           warmup: int, ssh_config: Optional[str], identity: Optional[str], port: Optional[int],
           ssh_option: tuple[str, ...], connect_timeout: int) -> None:
    """Copy MODEL_OR_RUN's bundle to a device over SSH, verify it there, benchmark it, bring the results back.

    The bundle (model, labels.txt, card, golden set) is copied to a temp name, checked by sha256
    and by 'edgecls verify' on the device, and only then renamed into place. The device's bench
    JSON lands in RUN/device/HOST/ and is printed beside this host's.
    """
    from edgecls.deploy.compare import side_by_side
    from edgecls.deploy.deploy import deploy as run_deploy

    cfg = DeployConfig(source=source, target=target, mode=mode, install=install, wheel=wheel, venv=venv,
                       python=python, service=service, unit=unit, service_env=service_env, verify=not no_verify,
                       threads=threads, runs=runs, warmup=warmup,
                       ssh=ssh_config_from(ssh_config, identity, port, ssh_option, connect_timeout))
    if imx500:
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
