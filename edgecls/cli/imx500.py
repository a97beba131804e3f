"""The AI Camera's command glue: ``export --imx500`` and ``deploy --imx500`` print through here.

``cli.export`` and ``cli.deploy`` dispatch to these when ``--imx500`` is given, so those modules
stay as they were but for one option and one call each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgecls.core.config import ExportConfig
from edgecls.core.device_config import DeployConfig


def export_imx500_cmd(cfg: ExportConfig) -> None:
    """Run the IMX500 export and print what it wrote (the parity table always)."""
    from edgecls.optimize.gate import format_parity
    from edgecls.optimize.imx500.export import Imx500ExportFailed, export_imx500

    try:
        card = export_imx500(cfg)
    except Imx500ExportFailed as e:
        click.echo(format_parity(e.parity))
        raise
    folder = Path(cfg.out) if cfg.out else Path(card["run"]) / "export"
    mem, pkg = card["memory"], card["package"]
    click.echo(f"Wrote {folder / card['model']} (IMX500, {pkg['bytes'] / 1e6:.2f} MB; {mem['utilization_percent']:g}% of "
               f"the sensor's {mem['available_bytes'] / 2**20:.0f} MB memory; input {card['input']['size']}px, "
               f"{card['input']['sensor_codes']}; quantized in {card['seconds']['quantize']:.0f} s, converted in "
               f"{card['seconds']['convert']:.0f} s).")
    click.echo(format_parity(_as_report(card, folder)))
    click.echo(f"Next, on the Pi: edgecls deploy {card['run']} pi@HOST --imx500 (runs imx500-package there)")


def _as_report(card: dict[str, Any], folder: Path) -> Any:
    """The parity report the card points to, read back for the table."""
    import json

    from edgecls.optimize.gate import ParityReport

    return ParityReport.from_json(json.loads((folder / card["parity"]["report"]).read_text()))


def deploy_imx500_cmd(cfg: DeployConfig) -> None:
    """Copy the converter's package to the Pi, run imx500-package there, place network.rpk."""
    from edgecls.deploy.imx500 import deploy_imx500

    result = deploy_imx500(cfg, echo=click.echo)
    click.echo(f"Live on {result.target.host}: {result.remote_rpk} (labels: {result.remote_labels}); run it with "
               f"edgecls camera --source imx500 --model {result.remote_rpk}")
    click.echo(f"Wrote {result.record}")
