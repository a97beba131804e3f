"""``edgecls prune``, ``edgecls export``, ``edgecls parity``: from a trained run to a checked .tflite.

TensorFlow is imported inside the commands only, so ``edgecls --help`` stays fast.
Help texts come from the config dataclasses' field docstrings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from edgecls.core.config import ExportConfig, ParityConfig, PruneConfig, field_help

PRUNE_DEFAULTS, EXPORT_DEFAULTS, PARITY_DEFAULTS = PruneConfig(), ExportConfig(), ParityConfig()

_RUN = click.Path(path_type=Path)  # existence is checked by RunDir.open with a better message


def register(group: click.Group) -> None:
    """Add this area's commands to the edgecls group."""
    group.add_command(prune_cmd)
    group.add_command(export_cmd)
    group.add_command(parity_cmd)


@click.command("prune")
@click.argument("run", type=_RUN)
@click.option("--sparsity", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=PRUNE_DEFAULTS.sparsity,
              show_default=True, help=field_help(PruneConfig, "sparsity"))
@click.option("--epochs", type=click.IntRange(min=1), default=PRUNE_DEFAULTS.epochs, show_default=True,
              help=field_help(PruneConfig, "epochs"))
@click.option("--learning-rate", type=float, default=PRUNE_DEFAULTS.learning_rate, show_default=True,
              help=field_help(PruneConfig, "learning_rate"))
@click.option("--batch-size", type=click.IntRange(min=1), default=PRUNE_DEFAULTS.batch_size, show_default=True,
              help=field_help(PruneConfig, "batch_size"))
@click.option("--force", is_flag=True, help=field_help(PruneConfig, "force"))
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
@click.option("--imx500", "mode", flag_value="imx500", help="Raspberry Pi AI Camera: MCT-quantized, gated, converted to packerOut.zip (edgecls deploy --imx500 packages it on the Pi).")
@click.option("--pruned", is_flag=True, help=field_help(ExportConfig, "pruned"))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder (default RUN/export), or a .tflite file path.")
@click.option("--representative-samples", type=click.IntRange(min=1), default=EXPORT_DEFAULTS.representative_samples,
              show_default=True, help=field_help(ExportConfig, "representative_samples"))
@click.option("--io", type=click.Choice(["uint8", "int8"]), default=EXPORT_DEFAULTS.io, show_default=True,
              help=field_help(ExportConfig, "io"))
@click.option("--allow-float-fallback", is_flag=True, help=field_help(ExportConfig, "allow_float_fallback"))
@click.option("--force", is_flag=True, help=field_help(ExportConfig, "force"))
@click.option("--no-parity", is_flag=True, help="Skip the parity check after an int8 export.")
@click.option("--max-drop", type=click.FloatRange(min=0.0), default=EXPORT_DEFAULTS.max_drop, show_default=True,
              help=field_help(ExportConfig, "max_drop"))
@click.option("--min-agreement", type=click.FloatRange(0.0, 1.0), default=EXPORT_DEFAULTS.min_agreement, show_default=True,
              help=field_help(ExportConfig, "min_agreement"))
@click.option("--parity-data", type=click.Path(path_type=str), default=None, metavar="DIR",
              help=field_help(ExportConfig, "parity_data"))
@click.option("--float-layers", default=EXPORT_DEFAULTS.float_layers, show_default=True, metavar="auto|none|NAME,...",
              help=field_help(ExportConfig, "float_layers"))
@click.option("--qat", is_flag=True, help=field_help(ExportConfig, "qat"))
@click.option("--no-repair", is_flag=True, help="Ship plain post-training int8 or fail: no GPTQ, no bias correction, no float layers, no QAT.")
@click.option("--qat-epochs", type=click.IntRange(min=1), default=EXPORT_DEFAULTS.qat_epochs, show_default=True,
              help=field_help(ExportConfig, "qat_epochs"))
@click.option("--qat-learning-rate", type=click.FloatRange(min=0.0, min_open=True), default=EXPORT_DEFAULTS.qat_learning_rate,
              show_default=True, help=field_help(ExportConfig, "qat_learning_rate"))
@click.option("--bias-correction/--no-bias-correction", default=EXPORT_DEFAULTS.bias_correction, show_default=True,
              help=field_help(ExportConfig, "bias_correction"))
@click.option("--golden-images", type=click.IntRange(min=0), default=EXPORT_DEFAULTS.golden_images, show_default=True,
              help=field_help(ExportConfig, "golden_images"))
@click.option("--gptq/--no-gptq", default=EXPORT_DEFAULTS.gptq, show_default=True,
              help=field_help(ExportConfig, "gptq"))
def export_cmd(run: Path, mode: Optional[str], out: Optional[Path], no_parity: bool, no_repair: bool, **options) -> None:
    """Convert RUN's model to TFLite in RUN/export/ (one file set per mode).

    Writes model_<mode>.tflite (with labels and normalisation metadata), model_<mode>.card.json,
    model_<mode>.golden.npz and labels.txt, all replaced together or not at all. --int8 checks
    parity against the float model (parity_int8.json); when the gate fails it tries bias
    correction (with --gptq: GPTQ rounding + bias correction), then float layers, then QAT, and
    ships the first that passes. If none passes it exits 1, replaces nothing and keeps the best
    candidate as model_<mode>.REJECTED.tflite.
    """
    from edgecls.optimize.export import ExportFailed, export_run
    from edgecls.optimize.parity import format_parity

    cfg = ExportConfig(run=str(run), mode=mode or "int8", out=str(out) if out else None, parity=not no_parity,
                       repair=not no_repair, **options)
    if cfg.mode == "imx500":
        from edgecls.cli.imx500 import export_imx500_cmd

        return export_imx500_cmd(cfg)
    try:
        card = export_run(cfg)
    except ExportFailed as e:
        if e.parity is not None:
            click.echo(format_parity(e.parity))
        raise
    model = Path(card["run"]) / "export" / card["model"] if out is None else _model_path(out, card)
    click.echo(
        f"Wrote {model} ({card['mode']}, {card['file_bytes'] / 1e6:.2f} MB, gzip {card['gzip_bytes'] / 1e6:.2f} MB, "
        f"input {card['input']['dtype']} {card['input']['size']}px, metadata {'yes' if card['metadata'] else 'no'})."
    )
    if card.get("parity"):
        report_path = model.with_name(card["parity"]["report"])
        click.echo(format_parity(json.loads(report_path.read_text())))
    if card.get("quantization"):
        click.echo(describe_quantization(card["quantization"]))


def describe_quantization(q: dict) -> str:
    """One line: which int8 path shipped, and what it cost against plain PTQ."""
    what = {"ptq": "plain post-training quantization",
            "selective-float": f"selective float layers ({len(q['float_layers'])} tensor(s) kept in float)",
            "qat": "quantization-aware training",
            "bias-corrected": "post-training quantization after bias correction",
            "gptq": "post-training quantization of GPTQ-rounded weights" + (
                ", bias-corrected" if q.get("bias_correction") else "")}[q["path"]]
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
@click.option("--data", type=click.Path(path_type=Path), default=None, help=field_help(ParityConfig, "data"))
@click.option("--labels-csv", type=click.Path(path_type=str), default=None, metavar="FILE",
              help=field_help(ParityConfig, "labels_csv") + " Needs --data.")
@click.option("--max-drop", type=click.FloatRange(min=0.0), default=PARITY_DEFAULTS.max_drop, show_default=True,
              help=field_help(ParityConfig, "max_drop"))
@click.option("--min-agreement", type=click.FloatRange(0.0, 1.0), default=PARITY_DEFAULTS.min_agreement, show_default=True,
              help=field_help(ParityConfig, "min_agreement"))
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help=field_help(ParityConfig, "json"))
@click.option("--threads", type=click.IntRange(min=1), default=PARITY_DEFAULTS.threads, show_default=True,
              help=field_help(ParityConfig, "threads"))
@click.option("--float-model", type=click.Path(path_type=Path), default=None,
              help=field_help(ParityConfig, "float_model"))
def parity_cmd(run: Path, model: Path, data: Optional[Path], json_path: Optional[Path], float_model: Optional[Path],
               **options) -> None:
    """Compare MODEL (.tflite, through the device runtime) with RUN's float Keras model.

    Uses the run's held-out images, test + val (or --data DIR with the run's class folders). Exits 1 when the
    accuracy drop exceeds --max-drop points or top-1 agreement is under --min-agreement.
    """
    from edgecls.core.errors import EdgeclsError
    from edgecls.optimize.parity import ParityFailed, format_parity, run_parity

    if options.get("labels_csv") and data is None:
        raise EdgeclsError("--labels-csv needs --data DIR (the folder its paths are relative to)")
    cfg = ParityConfig(run=str(run), model=str(model), data=str(data) if data else None,
                       json=str(json_path) if json_path else None,
                       float_model=str(float_model) if float_model else None, **options)
    try:
        report = run_parity(cfg)
    except ParityFailed as e:
        click.echo(format_parity(e.report))
        raise
    click.echo(format_parity(report))
