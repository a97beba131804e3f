"""Capture for retraining: uncertain frames and `edgecls collect` land in the folder
layout `edgecls train` reads, read back here with the trainer's own scanner."""

from __future__ import annotations

import json

import cv2
import pytest
from click.testing import CliRunner
from conftest import write_colour_video

from edgecls.cli import cli
from edgecls.core.device_config import CameraConfig
from edgecls.data.scan import scan_dataset
from edgecls.runtime.capture import RateLimit, safe_dirname
from edgecls.runtime.loop import run

pytestmark = pytest.mark.slow  # converts a model, decodes through TensorFlow


@pytest.fixture(scope="module")
def mixed_video(tmp_path_factory):
    # 10 clear red, 12 uncertain reddish, 10 clear blue, 12 uncertain bluish frames.
    path = tmp_path_factory.mktemp("mixed") / "mixed.mp4"
    return write_colour_video(path, [("red", 10), ("reddish", 12), ("blue", 10), ("bluish", 12)])


def test_uncertain_frames_become_a_training_folder(colour_model, mixed_video, tmp_path):
    out = tmp_path / "uncertain"
    stats = run(CameraConfig(model=str(colour_model), source=str(mixed_video), threads=1, headless=True,
                             save_uncertain=str(out), below=0.8, max_per_hour=100))
    assert stats.frames == 44
    assert stats.outputs["uncertain"] == {"saved": 24, "rate_limited": 0, "dropped": 0}
    # The trainer's scanner (decoding every file with TensorFlow) accepts it as a 2-class dataset.
    report = scan_dataset(out)
    assert report.classes == ["blue", "red"]
    assert report.counts() == {"all": {"blue": 12, "red": 12}}
    files = sorted(out.glob("*/*.jpg"))
    assert len(files) == 24
    assert all(reason in ("hidden folder",) for _, reason in report.skipped), report.skipped
    for img in files:
        meta = json.loads((img.parent / ".scores" / f"{img.stem}.json").read_text())
        assert meta["predicted"] == img.parent.name
        assert set(meta["scores"]) == {"red", "blue"} and abs(sum(meta["scores"].values()) - 1) < 1e-3
        top = max(meta["scores"].values())
        assert 0.5 <= top < 0.8 and meta["below"] == 0.8
        # Full frames (not the model's 32x32 input), with the frame's real colour.
        bgr = cv2.imread(str(img))
        assert bgr.shape == (120, 160, 3)
        r, b = bgr[..., 2].mean(), bgr[..., 0].mean()
        assert (r > b) == (img.parent.name == "red")


def test_uncertain_capture_is_rate_limited(colour_model, mixed_video, tmp_path):
    out = tmp_path / "u"
    stats = run(CameraConfig(model=str(colour_model), source=str(mixed_video), threads=1, headless=True,
                             save_uncertain=str(out), below=0.8, max_per_hour=5))
    assert stats.outputs["uncertain"]["saved"] == 5 and stats.outputs["uncertain"]["rate_limited"] == 19
    assert len(list(out.glob("*/*.jpg"))) == 5


def test_rate_limit_window_slides():
    lim = RateLimit(2, window_s=10.0)
    assert [lim.allow(t) for t in (0.0, 1.0, 2.0, 9.9, 10.0, 11.0, 11.5)] == [True, True, False, False, True, True, False]


@pytest.mark.parametrize("label, folder", [("cat", "cat"), ("a/b", "a_b"), (".hidden", "hidden"), ("", "unlabelled")])
def test_label_to_folder(label, folder):
    assert safe_dirname(label) == folder


def test_collect_records_each_class_for_training(colour_model, tmp_path):
    data = tmp_path / "data"
    runner = CliRunner()
    for colour in ("red", "blue"):
        video = write_colour_video(tmp_path / f"{colour}.mp4", [(colour, 8)])
        res = runner.invoke(cli, ["collect", str(data), "--label", colour, "--source", str(video),
                                  "--count", "5", "--interval", "0"])
        assert res.exit_code == 0, res.output
        assert f"Saved 5 image(s) to {data / colour} (count reached)" in res.output
    # Again for red: new names, nothing overwritten.
    video = write_colour_video(tmp_path / "red2.mp4", [("red", 3)])
    res = runner.invoke(cli, ["collect", str(data), "-l", "red", "-s", str(video), "-n", "10", "--interval", "0"])
    assert res.exit_code == 0 and "Saved 3 image(s)" in res.output and "(end of source)" in res.output
    report = scan_dataset(data)
    assert report.counts() == {"all": {"blue": 5, "red": 8}} and not report.skipped
    reds, blues = sorted((data / "red").glob("*.jpg")), sorted((data / "blue").glob("*.jpg"))
    assert len(reds) == 8 and len(blues) == 5
    for p in reds + blues:
        bgr = cv2.imread(str(p))
        assert bgr.shape == (120, 160, 3)
        assert (bgr[..., 2].mean() > bgr[..., 0].mean() + 100) == (p.parent.name == "red")


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["{tmp}/d", "--label", "a/b", "-s", "{video}"], 1, "Error: --label 'a/b' is not usable as a folder name"),
        (["{tmp}/d", "--label", "x", "-s", "{tmp}/missing.mp4"], 1, "Error: source not found: "),
        (["{tmp}/d", "--label", "x", "-s", "{video}", "--count", "0"], 2, "Invalid value for '--count'"),
        (["{tmp}/f.txt", "--label", "x", "-s", "{video}"], 2, "Invalid value for 'OUT': Directory"),
        (["{tmp}/d", "-s", "{video}"], 1, "give --label NAME (the class to record) or --negatives"),
    ],
)
def test_collect_cli_bad_inputs(args, code, message, tmp_path):
    video = write_colour_video(tmp_path / "v.mp4", [("red", 2)])
    (tmp_path / "f.txt").write_text("x")
    res = CliRunner().invoke(cli, ["collect", *[a.format(tmp=tmp_path, video=video) for a in args]])
    assert res.exit_code == code, res.output
    assert message in res.output and "Traceback" not in res.output
