"""``edgecls camera``, ``edgecls bench`` and ``edgecls doctor``: the device side, no TensorFlow.

Heavy modules (numpy, OpenCV, the TFLite runtime) are imported inside the commands so that
``edgecls --help`` stays instant on a Pi.
"""

from __future__ import annotations

import json
import logging
from typing import Optional

import click

from edgecls.cli.options import config_options
from edgecls.cli.ssh import ssh_config_from, ssh_options
from edgecls.core.device_config import BenchConfig, CameraConfig, CollectConfig, SshConfig, VerifyConfig


def register(group: click.Group) -> None:
    """Add this area's commands to the edgecls group."""
    group.add_command(camera)
    group.add_command(bench)
    group.add_command(doctor)
    group.add_command(verify)
    group.add_command(collect)


def _setup_logging() -> None:
    # Reopen/backoff warnings from the grabber go to stderr; one line each.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")


@click.command()
@config_options(
    CameraConfig, "model", "source", "labels", "threads", "xnnpack", "top_k", "threshold", "unknown_threshold",
    "unknown_label", "smoothing", "width",
    "height", "headless", "save", "jsonl", "stats_json", "max_frames", "realtime", "pipeline", "force", "serve",
    "serve_token", "serve_fps", "mqtt", "mqtt_home_assistant", "mqtt_stats_interval", "save_uncertain", "below",
    "max_per_hour", "log_on", "log_interval", "jsonl_max_mb", "jsonl_keep", "stall_timeout", "stall_retries",
    model={"required": True},
)
def camera(**options) -> None:
    """Classify frames live from a camera, a video file, an image folder, Picamera2 or GStreamer.

    Press q in the window or Ctrl-C to stop; outputs are flushed and closed either way.
    """
    from edgecls.runtime.loop import run

    _setup_logging()
    cfg = CameraConfig(**options)
    stats = run(cfg)
    st = stats.stage_ms
    click.echo(
        f"{stats.frames} frames from {stats.source} in {stats.elapsed_s:.1f}s ({stats.stop_reason}): "
        f"loop {stats.loop_fps:.1f} FPS, invoke {stats.invoke_fps:.1f} FPS, dropped {stats.dropped_frames}; "
        f"ms/frame capture {st['capture']:.2f}, preprocess {st['preprocess']:.2f}, invoke {st['invoke']:.2f}, "
        f"postprocess {st['postprocess']:.2f}, draw {st['draw']:.2f} [{stats.runtime}, {stats.threads} thread(s)]"
    )
    if stats.skipped_files:
        click.echo(f"Skipped {stats.skipped_files} image file(s) that could not be decoded (listed above).")
    age = stats.frame_age_ms
    if age:
        click.echo(f"frame age (capture to result) ms: p50 {age['p50']:.1f}, p90 {age['p90']:.1f}, "
                   f"p99 {age['p99']:.1f}, max {age['max']:.1f}")
    mqtt = stats.outputs.get("mqtt")
    if mqtt and not mqtt["connects"]:
        click.echo(f"MQTT: never connected to {mqtt['broker']}; no event was delivered (check --mqtt and the broker)",
                   err=True)
    unc = stats.outputs.get("uncertain")
    if unc:
        click.echo(f"Saved {unc['saved']} uncertain frame(s) to {cfg.save_uncertain} "
                   f"({unc['rate_limited']} over --max-per-hour, {unc['dropped']} dropped)")
    for path, what in ((cfg.save, "video"), (cfg.jsonl, "JSONL"), (cfg.stats_json, "stats")):
        if path:
            click.echo(f"Wrote {what}: {path}")


@click.command()
@click.argument("out", type=click.Path(file_okay=False))
@config_options(CollectConfig, "label", "negatives", "source", "count", "interval", "width", "height", "quality")
def collect(out: str, **options) -> None:
    """Record training images of one class from the camera into OUT/<label>/ (what 'edgecls train' reads), or
    with --negatives photos that are none of the classes into OUT/ (what 'edgecls train --negatives' reads)."""
    from edgecls.runtime.collect import collect as run_collect

    _setup_logging()
    cfg = CollectConfig(out=out, **options)
    stats = run_collect(cfg, on_save=lambda n, p: click.echo(f"{n}/{cfg.count} {p}"))
    click.echo(f"Saved {len(stats.saved)} image(s) to {stats.folder} ({stats.stop_reason})")
    if stats.skipped_files:
        click.echo(f"Skipped {stats.skipped_files} image file(s) that could not be decoded (listed above).")


@click.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@config_options(BenchConfig, "threads", "runs", "warmup", "images", "json", "compare_delegates", "seed", "force")
@click.option("--remote", metavar="USER@HOST", default=None,
              help="Measure on this device over SSH instead (copies MODELS to a temp folder there).")
@click.option("--venv", default=None, help="With --remote: the device's venv (default: /opt/edgecls/venv, ~/edgecls-venv).")
@ssh_options
def bench(models: tuple[str, ...], remote: Optional[str], venv: Optional[str], **options) -> None:
    """Measure latency (mean, std, min, p50/p90/p99), FPS, init time, size and memory of MODELS.

    With two models the p50 latency ratio (second / first) is printed per thread count.
    """
    from edgecls.runtime.bench import format_table, run_bench

    ssh = ssh_config_from(options)
    cfg = BenchConfig(models=tuple(models), **options)
    if remote:
        _bench_remote(remote, cfg, venv, ssh)
        return
    report = run_bench(cfg)
    click.echo(format_table(report))
    if cfg.json:
        click.echo(f"Wrote {cfg.json}")


def _bench_remote(remote: str, cfg: BenchConfig, venv: Optional[str], ssh_cfg: SshConfig) -> None:
    """The latency table of MODELS measured on a device over SSH."""
    import tempfile
    from pathlib import Path

    from edgecls.core.errors import EdgeclsError
    from edgecls.deploy.remote import bench_remote
    from edgecls.runtime.bench import format_table

    for name, value in (("--images", cfg.images), ("--compare-delegates", cfg.compare_delegates)):
        if value:
            raise EdgeclsError(f"{name} is not supported with --remote")
    if cfg.json and Path(cfg.json).exists() and not cfg.force:
        raise EdgeclsError(f"{cfg.json} already exists; choose another --json path or pass --force")
    with tempfile.TemporaryDirectory(prefix="edgecls-remote-bench-") as tmp:
        out = Path(cfg.json) if cfg.json else Path(tmp) / "bench.json"
        report = bench_remote(remote, cfg, out, ssh_cfg=ssh_cfg, venv=venv)
        click.echo(format_table(report))
    if cfg.json:
        click.echo(f"Wrote {cfg.json}")


@click.command()
@click.option("--model", "-m", default=None,
              help="Also check that this .tflite model loads, and verify it when its golden set is beside it.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(model: Optional[str], as_json: bool) -> None:
    """Check this device: OS, Python, TFLite runtime, OpenCV, Picamera2, cameras, display (and a model)."""
    from edgecls.runtime.doctor import diagnose, exit_code, format_report, problem

    report = diagnose(model)
    click.echo(json.dumps(report, indent=2, default=str) if as_json else format_report(report))
    if exit_code(report):
        raise click.ClickException(problem(report) or "the device check failed")


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@config_options(VerifyConfig, "golden", "threads", "labels", "json")
def verify(model: str, **options) -> None:
    """Check that this device's runtime reproduces the host's outputs on MODEL's golden set.

    Exits 1 when a prediction the host made with a clear margin changes, the model file is not
    the one the golden set was made from, or this device names the classes differently.
    """
    from pathlib import Path

    from edgecls.core.errors import EdgeclsError
    from edgecls.core.io import atomic_write_json
    from edgecls.runtime.classifier import read_labels_file
    from edgecls.runtime.golden import format_verify, verify_model

    cfg = VerifyConfig(model=model, **options)
    if cfg.labels is not None and not Path(cfg.labels).is_file():
        raise EdgeclsError(f"labels file not found: {cfg.labels}")
    names = read_labels_file(cfg.labels) if cfg.labels is not None else None
    report = verify_model(cfg.model, cfg.golden, threads=cfg.threads, labels=names)
    if cfg.json:
        atomic_write_json(cfg.json, report)
    click.echo(format_verify(report))
    if not report["passed"]:
        raise click.exceptions.Exit(1)
