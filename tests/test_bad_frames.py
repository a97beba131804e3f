"""A folder of images with bad files among the good: every command that reads frames from a folder
(camera, collect, bench --images) skips the bad ones, says how many, and still does its work; a folder
with nothing usable is one ``Error:`` line, never "0 frames" with exit 0.

The bad files are the ones a field folder gets: zero bytes (a copy that failed), random bytes, a JPEG
cut short, and a PNG whose header claims 60000 x 60000 pixels (OpenCV asserts on it rather than
returning nothing).
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgecls.cli import cli

GOOD = 3


def _absurd_png() -> bytes:
    """A PNG signature and an IHDR for 60000 x 60000 RGB, then an IDAT of nothing."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _bad_files(folder: Path) -> list[Path]:
    import io

    folder.mkdir(parents=True, exist_ok=True)
    jpeg = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(jpeg, "JPEG")
    bad = {"empty.png": b"", "noise.jpg": np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes(),
           "cut.jpg": jpeg.getvalue()[: len(jpeg.getvalue()) // 2], "huge.png": _absurd_png()}
    for name, raw in bad.items():
        (folder / name).write_bytes(raw)
    return [folder / n for n in bad]


@pytest.fixture()
def mixed(tmp_path) -> Path:
    folder = tmp_path / "frames"
    _bad_files(folder)
    for i in range(GOOD):
        Image.fromarray(np.full((48, 48, 3), (230, 20, 20), np.uint8)).save(folder / f"red_{i}.png")
    return folder


@pytest.fixture()
def only_bad(tmp_path) -> Path:
    folder = tmp_path / "broken"
    _bad_files(folder)
    return folder


def _errors(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("Error:")]


def test_camera_skips_the_bad_files_counts_them_and_classifies_the_rest(colour_model, mixed, tmp_path):
    jsonl = tmp_path / "results.jsonl"
    r = CliRunner().invoke(cli, ["camera", "-m", str(colour_model), "--source", str(mixed), "--headless",
                                 "--jsonl", str(jsonl)])
    assert r.exit_code == 0, r.output
    assert f"{GOOD} frames from" in r.output
    assert "Skipped 4 image file(s) that could not be decoded" in r.output
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [row["label"] for row in rows] == ["red"] * GOOD


def test_camera_on_a_folder_of_only_bad_files_is_an_error(colour_model, only_bad):
    r = CliRunner().invoke(cli, ["camera", "-m", str(colour_model), "--source", str(only_bad), "--headless"])
    assert r.exit_code == 1, r.output
    [error] = _errors(r.output)
    assert f"no usable image in folder {only_bad}: all 4 file(s) could not be decoded" in error
    assert "Traceback" not in r.output


def test_collect_skips_the_bad_files_and_saves_the_good(mixed, tmp_path):
    out = tmp_path / "dataset"
    r = CliRunner().invoke(cli, ["collect", str(out), "-l", "red", "--source", str(mixed), "-n", "10", "--interval", "0"])
    assert r.exit_code == 0, r.output
    assert len(list((out / "red").glob("*.jpg"))) == GOOD
    assert "Skipped 4 image file(s)" in r.output


def test_collect_from_only_bad_files_is_an_error_and_writes_nothing(only_bad, tmp_path):
    out = tmp_path / "dataset"
    r = CliRunner().invoke(cli, ["collect", str(out), "-l", "red", "--source", str(only_bad), "-n", "5", "--interval", "0"])
    assert r.exit_code == 1, r.output
    [error] = _errors(r.output)
    assert f"no usable image in {only_bad}" in error
    assert not list(out.rglob("*.jpg"))


def test_bench_feeds_the_good_images_and_refuses_a_folder_of_bad_ones(colour_model, mixed, only_bad, tmp_path):
    report = tmp_path / "bench.json"
    r = CliRunner().invoke(cli, ["bench", str(colour_model), "--images", str(mixed), "--runs", "3", "--warmup", "1",
                                 "--json", str(report)])
    assert r.exit_code == 0, r.output
    assert json.loads(report.read_text())["results"][0]["images"] == "real"
    r = CliRunner().invoke(cli, ["bench", str(colour_model), "--images", str(only_bad), "--runs", "3"])
    assert r.exit_code == 1, r.output
    [error] = _errors(r.output)
    assert f"no readable images in {only_bad}" in error
