"""edgecls bench: fields and sane values (no timing asserts: speed is measured by tools/)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgecls.cli import cli
from edgecls.core.device_config import BenchConfig
from edgecls.runtime.bench import latency_summary, run_bench

pytestmark = pytest.mark.slow  # uses the converted tiny models


def test_latency_summary_percentiles():
    lat = latency_summary(np.array([1, 2, 3, 4, 100], dtype=np.int64) * 1_000_000)
    assert lat["min"] == 1.0 and lat["p50"] == 3.0 and lat["mean"] == 22.0
    assert lat["p50"] <= lat["p90"] <= lat["p99"] <= 100.0


def test_bench_cli_two_models_threads_and_delegates(tiny_tflite, tmp_path):
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(cli, [
        "bench", str(tiny_tflite["float32"]), str(tiny_tflite["int8"]), "--threads", "1,2",
        "--runs", "30", "--warmup", "3", "--json", str(out), "--compare-delegates",
    ])
    assert res.exit_code == 0, res.output
    assert "model_int8.tflite" in res.output and "p50 ratio model_int8.tflite / model_float32.tflite" in res.output
    report = json.loads(out.read_text())
    results = report["results"]
    assert len(results) == 2 * 2 * 2
    assert {(r["threads"], r["xnnpack"]) for r in results} == {(1, True), (1, False), (2, True), (2, False)}
    for r in results:
        lat = r["latency_ms"]
        assert set(lat) == {"mean", "std", "min", "p50", "p90", "p99"}
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"]
        assert lat["min"] <= lat["mean"] and lat["std"] >= 0
        assert r["fps"] == pytest.approx(1000 / lat["mean"])
        assert r["init_ms"] > 0 and r["peak_rss_mb"] > 10 and r["runtime"] == "ai_edge_litert"
        assert r["size_bytes"] == (tiny_tflite["int8"] if "int8" in r["model"] else tiny_tflite["float32"]).stat().st_size
    m = report["machine"]
    assert {"os", "arch", "cpu_model", "cores", "python", "runtime", "runtime_version", "numpy"} <= set(m)
    assert len(report["ratios"]) == 4
    r0 = next(q for q in report["ratios"] if q["threads"] == 1 and q["xnnpack"])
    p50 = {r["model"]: r["latency_ms"]["p50"] for r in results if r["threads"] == 1 and r["xnnpack"]}
    assert r0["p50_ratio"] == pytest.approx(p50[str(tiny_tflite["int8"])] / p50[str(tiny_tflite["float32"])])
    # Never overwrite results without --force.
    res = CliRunner().invoke(cli, ["bench", str(tiny_tflite["int8"]), "--runs", "2", "--json", str(out)])
    assert res.exit_code == 1 and "already exists" in res.output


def test_bench_with_real_images(tiny_tflite, tmp_path):
    for i, img in enumerate(tiny_tflite["images"][:3]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), img)
    report = run_bench(BenchConfig(models=(str(tiny_tflite["int8"]),), threads=(1,), runs=6, warmup=1,
                                   images=str(tmp_path)))
    assert report["results"][0]["images"] == "real" and report["ratios"] == []


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["{tmp}/missing.tflite"], 1, "Error: model not found: "),
        (["{corrupt}"], 1, "is not a valid .tflite model ("),
        (["{model}", "--threads", "1,x"], 2, "Invalid value for '--threads': must be integers between 1 and 64, got '1,x'"),
        (["{model}", "--threads", "0"], 2, "Invalid value for '--threads'"),
        (["{model}", "--threads", ""], 2, "Invalid value for '--threads'"),
        (["{model}", "--runs", "0"], 2, "Invalid value for '--runs'"),
        (["{model}", "--images", "{tmp}/nodir"], 1, "Error: image folder not found"),
    ],
)
def test_bench_cli_bad_inputs(args, code, message, tiny_tflite, tmp_path):
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(np.random.default_rng(2).bytes(1024))
    fill = {"tmp": str(tmp_path), "corrupt": str(corrupt), "model": str(tiny_tflite["int8"])}
    res = CliRunner().invoke(cli, ["bench", *[a.format(**fill) for a in args]])
    assert res.exit_code == code, res.output
    assert message in res.output and "Traceback" not in res.output
