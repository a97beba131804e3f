"""The AI Camera's command glue: ``export --imx500`` and ``deploy --imx500`` print through here.

``cli.export`` and ``cli.deploy`` dispatch to these when ``--imx500`` is given, so those modules
stay as they were but for one option and one call each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgecls.core.config import DeployConfig, ExportConfig


def export_imx500_cmd(cfg: ExportConfig) -> None:
    """Run the IMX500 export and print what it wrote (the parity table always)."""
    from edgecls.optimize.imx500.export import Imx500ExportFailed, export_imx500
    from edgecls.optimize.parity import format_parity

    try:
        card = export_imx500(cfg)
    except Imx500ExportFailed as e:
        click.echo(format_parity(e.parity) + "\n" + clear_gate_line(e.parity))
        raise
    folder = Path(cfg.out) if cfg.out else Path(card["run"]) / "export"
    mem, pkg = card["memory"], card["package"]
    click.echo(f"Wrote {folder / card['model']} (IMX500, {pkg['bytes'] / 1e6:.2f} MB; {mem['utilization_percent']:g}% of "
               f"the sensor's {mem['available_bytes'] / 2**20:.0f} MB memory; input {card['input']['size']}px, "
               f"{card['input']['sensor_codes']}; quantized in {card['seconds']['quantize']:.0f} s, converted in "
               f"{card['seconds']['convert']:.0f} s).")
    report = _as_report(card, folder)
    click.echo(format_parity(report) + "\n" + clear_gate_line(report))
    click.echo(f"Next, on the Pi: edgecls deploy {card['run']} pi@HOST --imx500 (runs imx500-package there)")


def clear_gate_line(report: dict[str, Any]) -> str:
    """The gate format_parity does not print: agreement on the clearly decided images."""
    t, g = report["near_ties"], report["gates"]
    if t["agreement_clear"] is None:
        return f"  clear gate    : no image decided by a margin >= {t['margin']:g}; not gated"
    return (f"  clear gate    : {t['agreement_clear']:.4f} of {t['n_clear']} clearly decided images keep their top-1 "
            f"(gate >= {g['min_clear_agreement']:g}): {report['clear_gate']}")


def _as_report(card: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The parity report the card points to, read back for the table."""
    import json

    path = folder / card["parity"]["report"]
    if path.is_file():
        return json.loads(path.read_text())
    return {**card["parity"], "per_class": {}, "passed": card["parity_passed"]}


def deploy_imx500_cmd(cfg: DeployConfig) -> None:
    """Copy the converter's package to the Pi, run imx500-package there, place network.rpk."""
    from edgecls.deploy.imx500 import deploy_imx500

    result = deploy_imx500(cfg, echo=click.echo)
    click.echo(f"Live on {result.target.host}: {result.remote_rpk} (labels: {result.remote_labels}); run it with "
               f"edgecls camera --source imx500 --model {result.remote_rpk}")
    click.echo(f"Wrote {result.record}")
