"""``edgecls prune``, ``edgecls export``, ``edgecls parity``: from a trained run to a checked .tflite.

TensorFlow is imported inside the commands only, so ``edgecls --help`` stays fast.
Help texts come from the config dataclasses' field docstrings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from edgecls.cli.options import config_options
from edgecls.cli.report import refresh_after
from edgecls.core.config import ExportConfig, ParityConfig, PruneConfig

_RUN = click.Path(path_type=Path)  # existence is checked by RunDir.open with a better message


def register(group: click.Group) -> None:
    """Add this area's commands to the edgecls group."""
    group.add_command(prune_cmd)
    group.add_command(export_cmd)
    group.add_command(parity_cmd)


@click.command("prune")
@click.argument("run", type=_RUN)
@config_options(PruneConfig, "sparsity", "epochs", "learning_rate", "batch_size", "force")
def prune_cmd(run: Path, **options) -> None:
    """Prune RUN's model (Conv2D/Dense kernels) to --sparsity during a short fine-tune.

    Writes RUN/model_pruned.keras and RUN/pruning.json (measured sparsity, accuracy and gzip
    size before/after). Export it with 'edgecls export RUN --int8 --pruned'.
    """
    from edgecls.optimize.prune import prune_run

    r = prune_run(PruneConfig(run=str(run), **options))
    acc = ""
    if r["accuracy_before"] is not None:
        acc = (f", {r['eval_split']} accuracy {100 * r['accuracy_before']:.1f}% -> "
               f"{100 * r['accuracy_after']:.1f}%")
    click.echo(
        f"Pruned {r['pruned_layers']} layers to {100 * r['sparsity']:.1f}% zeros (target "
        f"{100 * r['target_sparsity']:.0f}%){acc}; gzip'd float32 weights {r['gzip_bytes_before'] / 1e6:.2f} MB -> "
        f"{r['gzip_bytes_after'] / 1e6:.2f} MB ({r['gzip_ratio']}x) in {r['elapsed_s']:.0f} s.\n"
        f"Wrote {Path(run) / r['model']} and {Path(run) / 'pruning.json'}."
    )
    refresh_after(run)


class _OneModeCommand(click.Command):
    """Refuses two export modes at once (click would silently keep the last of the shared flags)."""

    MODE_FLAGS = ("--int8", "--float16", "--dynamic", "--float32", "--imx500")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(dict.fromkeys(a for a in args if a in self.MODE_FLAGS))
        if len(given) > 1:
            raise click.UsageError(f"{' and '.join(given)} exclude each other; export one mode per command", ctx)
        return super().parse_args(ctx, args)


@click.command("export", cls=_OneModeCommand)
@click.argument("run", type=_RUN)
@click.option("--int8", "mode", flag_value="int8", help="Full integer (default): int8 weights and activations.")
@click.option("--float16", "mode", flag_value="float16", help="float16 weights, float32 compute on most CPUs.")
@click.option("--dynamic", "mode", flag_value="dynamic", help="int8 weights, float activations.")
@click.option("--float32", "mode", flag_value="float32", help="Plain float32.")
@click.option("--imx500", "mode", flag_value="imx500", help="Raspberry Pi AI Camera: MCT-quantized, gated, converted to "
              "packerOut.zip (edgecls deploy --imx500 packages it on the Pi).")
@config_options(
    ExportConfig, "pruned", "out", "representative_samples", "io", "allow_float_fallback", "force", "parity",
    "max_drop", "min_clear_agreement", "min_agreement", "parity_data", "float_layers", "qat", "repair", "qat_epochs",
    "qat_learning_rate", "bias_correction", "golden_images",
)
def export_cmd(run: Path, mode: Optional[str], **options) -> None:
    """Convert RUN's model to TFLite in RUN/export/ (one file set per mode).

    Writes model_<mode>.tflite (with labels and normalisation metadata), model_<mode>.card.json,
    model_<mode>.golden.npz and labels.txt, all replaced together or not at all. --int8 gates each
    file against the float model (parity_int8.json; see 'edgecls parity --help' for the gate) and
    tries the int8 methods in order: plain PTQ, bias correction, the stem in float, float layers
    by effect, QAT; the first that passes ships. If none passes it exits 1, replaces nothing and
    keeps the best candidate as model_<mode>.REJECTED.tflite.
    """
    from edgecls.optimize.export import ExportFailed, export_run
    from edgecls.optimize.gate import ParityReport, format_parity

    cfg = ExportConfig(run=str(run), mode=mode or ExportConfig.mode, **options)
    if cfg.mode == "imx500":
        from edgecls.cli.imx500 import export_imx500_cmd

        return export_imx500_cmd(cfg)
    out = Path(cfg.out) if cfg.out else None
    try:
        card = export_run(cfg)
    except ExportFailed as e:
        if e.parity is not None:
            click.echo(format_parity(e.parity))
        refresh_after(run, wrote=out)  # the rejected file's changed images are worth seeing too
        raise
    model = Path(card["run"]) / "export" / card["model"] if out is None else _model_path(out, card)
    click.echo(
        f"Wrote {model} ({card['mode']}, {card['file_bytes'] / 1e6:.2f} MB, gzip {card['gzip_bytes'] / 1e6:.2f} MB, "
        f"input {card['input']['dtype']} {card['input']['size']}px, metadata {'yes' if card['metadata'] else 'no'})."
    )
    if card.get("parity"):
        report_path = model.with_name(card["parity"]["report"])
        click.echo(format_parity(ParityReport.from_json(json.loads(report_path.read_text()))))
    if card.get("quantization"):
        click.echo(describe_quantization(card["quantization"]))
    refresh_after(run, wrote=out)


def describe_quantization(q: dict) -> str:
    """One line: which int8 path shipped, and what it cost against plain PTQ."""
    from edgecls.optimize.int8.plan import summary_of

    what = summary_of(q["path"])
    if q["float_layers"]:
        what += f"; {len(q['float_layers'])} tensor(s) kept in float"
    line = f"int8 path: {q['path']} ({what})"
    tried = [a["path"] for a in q.get("attempts") or []]
    if len(tried) > 1:
        line += f"; tried {' -> '.join(tried)}"
    cost = q.get("cost_vs_ptq")
    if cost:
        lat, size = cost["latency_ms_1thread"], cost["file_bytes"]
        line += (f"; cost vs PTQ: latency {lat['ptq']:.2f} -> {lat['shipped']:.2f} ms (1 thread), "
                 f"size {size['difference']:+d} bytes")
    return line + "."


def _model_path(out: Path, card: dict) -> Path:
    return out if str(out).endswith(".tflite") else out / card["model"]


@click.command("parity")
@click.argument("run", type=_RUN)
@click.argument("model", type=click.Path(path_type=Path))
@config_options(ParityConfig, "data", "labels_csv", "max_drop", "min_clear_agreement", "min_agreement", "json", "threads",
                "float_model", "diagnose")
def parity_cmd(run: Path, model: Path, **options) -> None:
    """Compare MODEL (.tflite, through the device runtime) with RUN's float Keras model.

    Uses the run's held-out images, test + val (or --data DIR with the run's class folders).

    \b
    Gated (exit 1 when either fails):
      - accuracy drop (float minus MODEL, points) <= --max-drop;
      - clear-decision agreement >= --min-clear-agreement: of the images the
        float model decides clearly (top-1 beats top-2 by >= 0.10, the margin
        'edgecls verify' uses), that share keeps its top-1.
    Reported, not gated unless --min-agreement is given: top-1 agreement over
    all images, and the changed top-1s among near-ties and exact ties in the
    file's 8-bit output. A near-tie flips under any rounding, and a uint8
    softmax cannot separate classes closer than 1/256; the decisions a user
    relies on are the clear ones. Each figure has a 95% interval; a gate it
    crosses is undecided on these images (the result says so).
    """
    from edgecls.core.errors import EdgeclsError
    from edgecls.optimize.gate import format_parity
    from edgecls.optimize.parity import ParityFailed, run_parity

    if options.get("labels_csv") and options.get("data") is None:
        raise EdgeclsError("--labels-csv needs --data DIR (the folder its paths are relative to)")
    cfg = ParityConfig(run=str(run), model=str(model), **options)
    try:
        report = run_parity(cfg)
    except ParityFailed as e:
        click.echo(format_parity(e.report))
        if cfg.json:  # without --json parity changes nothing in the run
            refresh_after(run, wrote=cfg.json)
        raise
    click.echo(format_parity(report))
    if cfg.json:
        refresh_after(run, wrote=cfg.json)
