"""``edgecls camera``, ``edgecls bench`` and ``edgecls doctor``: the device side, no TensorFlow.

Heavy modules (numpy, OpenCV, the TFLite runtime) are imported inside the commands so that
``edgecls --help`` stays instant on a Pi.
"""

from __future__ import annotations

import json
import logging
from typing import Optional

import click

from edgecls.cli.ssh import ssh_config_from, ssh_options
from edgecls.core.config import BenchConfig, CameraConfig, CollectConfig, field_help


def register(group: click.Group) -> None:
    """Add this area's commands to the edgecls group."""
    group.add_command(camera)
    group.add_command(bench)
    group.add_command(doctor)
    group.add_command(verify)
    group.add_command(collect)


def _cam(name: str) -> str:
    return field_help(CameraConfig, name)


def _bench(name: str) -> str:
    return field_help(BenchConfig, name)


def parse_threads(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4), parsed once at the boundary."""
    try:
        threads = tuple(int(t) for t in str(value).replace(" ", "").split(",") if t != "")
    except ValueError:
        raise click.BadParameter(f"expected positive integers separated by commas, e.g. 1,2,4; got {value!r}") from None
    if not threads or any(t < 1 for t in threads):
        raise click.BadParameter(f"expected positive integers separated by commas, e.g. 1,2,4; got {value!r}")
    return tuple(dict.fromkeys(threads))  # keep order, drop repeats


def _setup_logging() -> None:
    # Reopen/backoff warnings from the grabber go to stderr; one line each.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")


@click.command()
@click.option("--model", "-m", required=True, help=_cam("model"))
@click.option("--source", "-s", default=CameraConfig.source, show_default=True, help=_cam("source"))
@click.option("--labels", default=None, help=_cam("labels"))
@click.option("--threads", type=click.IntRange(1, 64), default=CameraConfig.threads, show_default=True, help=_cam("threads"))
@click.option("--no-xnnpack", is_flag=True, help="Turn the XNNPACK delegate off (to compare).")
@click.option("--top-k", type=click.IntRange(1, 1000), default=CameraConfig.top_k, show_default=True, help=_cam("top_k"))
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=CameraConfig.threshold, show_default=True,
              help=_cam("threshold"))
@click.option("--smoothing", type=click.FloatRange(0.0, 1.0, max_open=True), default=CameraConfig.smoothing,
              show_default=True, help=_cam("smoothing"))
@click.option("--width", type=click.IntRange(16, 8192), default=CameraConfig.width, show_default=True, help=_cam("width"))
@click.option("--height", type=click.IntRange(16, 8192), default=CameraConfig.height, show_default=True,
              help=_cam("height"))
@click.option("--headless/--window", default=None, help="No window (default: automatic, headless without a display).")
@click.option("--save", type=click.Path(dir_okay=False), default=None, help=_cam("save"))
@click.option("--jsonl", type=click.Path(dir_okay=False), default=None, help=_cam("jsonl"))
@click.option("--stats-json", type=click.Path(dir_okay=False), default=None, help=_cam("stats_json"))
@click.option("--max-frames", type=click.IntRange(1), default=None, help=_cam("max_frames"))
@click.option("--realtime", is_flag=True, help=_cam("realtime"))
@click.option("--no-pipeline", is_flag=True, help="Capture and preprocess on the inference thread (to compare).")
@click.option("--force", is_flag=True, help=_cam("force"))
@click.option("--serve", default=None, metavar="[HOST:]PORT", help=_cam("serve"))
@click.option("--serve-token", default=None, help=_cam("serve_token"))
@click.option("--serve-fps", type=click.FloatRange(0.1, 60.0), default=CameraConfig.serve_fps, show_default=True,
              help=_cam("serve_fps"))
@click.option("--mqtt", default=None, metavar="URL", help=_cam("mqtt"))
@click.option("--mqtt-home-assistant", is_flag=True, help=_cam("mqtt_home_assistant"))
@click.option("--mqtt-stats-interval", type=click.FloatRange(1.0), default=CameraConfig.mqtt_stats_interval_s,
              show_default=True, help=_cam("mqtt_stats_interval_s"))
@click.option("--save-uncertain", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help=_cam("save_uncertain"))
@click.option("--below", type=click.FloatRange(0.0, 1.0, min_open=True), default=CameraConfig.below,
              show_default=True, help=_cam("below"))
@click.option("--max-per-hour", type=click.IntRange(1), default=CameraConfig.max_per_hour, show_default=True,
              help=_cam("max_per_hour"))
@click.option("--log-on", type=click.Choice(["frame", "change"]), default=CameraConfig.log_on, show_default=True,
              help=_cam("log_on"))
@click.option("--log-interval", type=click.FloatRange(0.0), default=CameraConfig.log_interval_s, show_default=True,
              help=_cam("log_interval_s"))
@click.option("--jsonl-max-mb", type=click.FloatRange(0.0), default=CameraConfig.jsonl_max_mb, show_default=True,
              help=_cam("jsonl_max_mb"))
@click.option("--jsonl-keep", type=click.IntRange(0, 1000), default=CameraConfig.jsonl_keep, show_default=True,
              help=_cam("jsonl_keep"))
@click.option("--stall-timeout", type=click.FloatRange(0.0), default=CameraConfig.stall_timeout_s,
              show_default=True, help=_cam("stall_timeout_s"))
@click.option("--stall-retries", type=click.IntRange(0, 100), default=CameraConfig.stall_retries, show_default=True,
              help=_cam("stall_retries"))
def camera(model: str, source: str, labels: Optional[str], threads: int, no_xnnpack: bool, top_k: int,
           threshold: float, smoothing: float, width: int, height: int, headless: Optional[bool],
           save: Optional[str], jsonl: Optional[str], stats_json: Optional[str], max_frames: Optional[int],
           realtime: bool, no_pipeline: bool, force: bool, serve: Optional[str], serve_token: Optional[str],
           serve_fps: float, mqtt: Optional[str], mqtt_home_assistant: bool, mqtt_stats_interval: float,
           save_uncertain: Optional[str], below: float, max_per_hour: int, log_on: str, log_interval: float,
           jsonl_max_mb: float, jsonl_keep: int, stall_timeout: float, stall_retries: int) -> None:
    """Classify frames live from a camera, a video file, an image folder, Picamera2 or GStreamer.

    Press q in the window or Ctrl-C to stop; outputs are flushed and closed either way.
    """
    from edgecls.runtime.loop import run

    _setup_logging()
    cfg = CameraConfig(
        model=model, source=source, labels=labels, threads=threads, xnnpack=not no_xnnpack, top_k=top_k,
        threshold=threshold, smoothing=smoothing, width=width, height=height, headless=headless, save=save,
        jsonl=jsonl, stats_json=stats_json, max_frames=max_frames, realtime=realtime, pipeline=not no_pipeline,
        force=force, serve=serve, serve_token=serve_token, serve_fps=serve_fps, mqtt=mqtt,
        mqtt_home_assistant=mqtt_home_assistant, mqtt_stats_interval_s=mqtt_stats_interval,
        save_uncertain=save_uncertain, below=below, max_per_hour=max_per_hour, log_on=log_on,
        log_interval_s=log_interval, jsonl_max_mb=jsonl_max_mb, jsonl_keep=jsonl_keep,
        stall_timeout_s=stall_timeout, stall_retries=stall_retries,
    )
    stats = run(cfg)
    st = stats.stage_ms
    click.echo(
        f"{stats.frames} frames from {stats.source} in {stats.elapsed_s:.1f}s ({stats.stop_reason}): "
        f"loop {stats.loop_fps:.1f} FPS, invoke {stats.invoke_fps:.1f} FPS, dropped {stats.dropped_frames}; "
        f"ms/frame capture {st['capture']:.2f}, preprocess {st['preprocess']:.2f}, invoke {st['invoke']:.2f}, "
        f"postprocess {st['postprocess']:.2f}, draw {st['draw']:.2f} [{stats.runtime}, {stats.threads} thread(s)]"
    )
    age = stats.frame_age_ms
    if age:
        click.echo(f"frame age (capture to result) ms: p50 {age['p50']:.1f}, p90 {age['p90']:.1f}, "
                   f"p99 {age['p99']:.1f}, max {age['max']:.1f}")
    unc = stats.outputs.get("uncertain")
    if unc:
        click.echo(f"Saved {unc['saved']} uncertain frame(s) to {save_uncertain} "
                   f"({unc['rate_limited']} over --max-per-hour, {unc['dropped']} dropped)")
    for path, what in ((save, "video"), (jsonl, "JSONL"), (stats_json, "stats")):
        if path:
            click.echo(f"Wrote {what}: {path}")


def _col(name: str) -> str:
    return field_help(CollectConfig, name)


@click.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--label", "-l", required=True, help=_col("label"))
@click.option("--source", "-s", default=CollectConfig.source, show_default=True, help=_col("source"))
@click.option("--count", "-n", type=click.IntRange(1), default=CollectConfig.count, show_default=True, help=_col("count"))
@click.option("--interval", type=click.FloatRange(0.0), default=CollectConfig.interval_s, show_default=True,
              help=_col("interval_s"))
@click.option("--width", type=click.IntRange(16, 8192), default=CollectConfig.width, show_default=True, help=_col("width"))
@click.option("--height", type=click.IntRange(16, 8192), default=CollectConfig.height, show_default=True,
              help=_col("height"))
@click.option("--quality", type=click.IntRange(1, 100), default=CollectConfig.quality, show_default=True,
              help=_col("quality"))
def collect(out: str, label: str, source: str, count: int, interval: float, width: int, height: int,
            quality: int) -> None:
    """Record training images of one class from the camera into OUT/<label>/ (what 'edgecls train' reads)."""
    from edgecls.runtime.collect import collect as run_collect

    _setup_logging()
    cfg = CollectConfig(out=out, label=label, source=source, count=count, interval_s=interval, width=width,
                        height=height, quality=quality)
    stats = run_collect(cfg, on_save=lambda n, p: click.echo(f"{n}/{count} {p}"))
    click.echo(f"Saved {len(stats.saved)} image(s) to {stats.folder} ({stats.stop_reason})")


@click.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--threads", default="1", show_default=True, callback=parse_threads,
              help="Thread counts to measure, comma-separated (e.g. 1,2,4).")
@click.option("--runs", type=click.IntRange(1), default=BenchConfig.runs, show_default=True, help=_bench("runs"))
@click.option("--warmup", type=click.IntRange(0), default=BenchConfig.warmup, show_default=True, help=_bench("warmup"))
@click.option("--images", type=click.Path(file_okay=False), default=None, help=_bench("images"))
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help=_bench("json"))
@click.option("--compare-delegates", is_flag=True, help=_bench("compare_delegates"))
@click.option("--seed", type=int, default=BenchConfig.seed, show_default=True, help=_bench("seed"))
@click.option("--force", is_flag=True, help=_bench("force"))
@click.option("--remote", metavar="USER@HOST", default=None,
              help="Measure on this device over SSH instead (copies MODELS to a temp folder there).")
@click.option("--venv", default=None, help="With --remote: the device's venv (default: /opt/edgecls/venv, ~/edgecls-venv).")
@ssh_options
def bench(models: tuple[str, ...], threads: tuple[int, ...], runs: int, warmup: int, images: Optional[str],
          json_path: Optional[str], compare_delegates: bool, seed: int, force: bool, remote: Optional[str],
          venv: Optional[str], ssh_config: Optional[str], identity: Optional[str], port: Optional[int],
          ssh_option: tuple[str, ...], connect_timeout: int) -> None:
    """Measure latency (mean, std, min, p50/p90/p99), FPS, init time, size and memory of MODELS.

    With two models the p50 latency ratio (second / first) is printed per thread count.
    """
    from edgecls.runtime.bench import format_table, run_bench

    if remote:
        _bench_remote(remote, models, threads, runs, warmup, json_path, force, venv,
                      ssh_config_from(ssh_config, identity, port, ssh_option, connect_timeout),
                      unsupported={"--images": images, "--compare-delegates": compare_delegates})
        return

    cfg = BenchConfig(models=tuple(models), threads=threads, runs=runs, warmup=warmup, images=images,
                      json=json_path, compare_delegates=compare_delegates, seed=seed, force=force)
    report = run_bench(cfg)
    click.echo(format_table(report))
    if json_path:
        click.echo(f"Wrote {json_path}")


def _bench_remote(remote: str, models: tuple[str, ...], threads: tuple[int, ...], runs: int, warmup: int,
                  json_path: Optional[str], force: bool, venv: Optional[str], ssh_cfg, unsupported: dict) -> None:
    """The latency table of MODELS measured on a device over SSH."""
    import tempfile
    from pathlib import Path

    from edgecls.core.errors import EdgeclsError
    from edgecls.deploy.deploy import bench_remote
    from edgecls.runtime.bench import format_table

    for name, value in unsupported.items():
        if value:
            raise EdgeclsError(f"{name} is not supported with --remote")
    if json_path and Path(json_path).exists() and not force:
        raise EdgeclsError(f"{json_path} already exists; choose another --json path or pass --force")
    with tempfile.TemporaryDirectory(prefix="edgecls-remote-bench-") as tmp:
        out = Path(json_path) if json_path else Path(tmp) / "bench.json"
        report = bench_remote(remote, models, threads=threads, runs=runs, warmup=warmup, local_json=out,
                              ssh_cfg=ssh_cfg, venv=venv)
        click.echo(format_table(report))
    if json_path:
        click.echo(f"Wrote {json_path}")


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
@click.option("--golden", type=click.Path(dir_okay=False), default=None,
              help="Golden set (default: MODEL's .golden.npz beside it, written by 'edgecls export').")
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True, help="Interpreter threads.")
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="labels.txt to use (default: beside the model, which must agree with the model's embedded labels).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the report here.")
def verify(model: str, golden: Optional[str], threads: int, labels: Optional[str], json_path: Optional[str]) -> None:
    """Check that this device's runtime reproduces the host's outputs on MODEL's golden set.

    Exits 1 when a prediction the host made with a clear margin changes, the model file is not
    the one the golden set was made from, or this device names the classes differently.
    """
    from pathlib import Path

    from edgecls.core.errors import EdgeclsError
    from edgecls.core.io import atomic_write_json
    from edgecls.runtime.classifier import read_labels_file
    from edgecls.runtime.golden import format_verify, verify_model

    if labels is not None and not Path(labels).is_file():
        raise EdgeclsError(f"labels file not found: {labels}")
    names = read_labels_file(labels) if labels is not None else None
    report = verify_model(model, golden, threads=threads, labels=names)
    if json_path:
        atomic_write_json(json_path, report)
    click.echo(format_verify(report))
    if not report["passed"]:
        raise click.exceptions.Exit(1)
