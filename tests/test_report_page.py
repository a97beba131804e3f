"""The report page drawn from a run's files alone (no TensorFlow): a hand-made run folder with known
predictions, exports, parity report and device results, so every figure on the page is known."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from dataclasses import asdict
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecls.core.config import TrainConfig
from edgecls.core.rundir import RunDir
from edgecls.report.store import (
    CamImage, CamSet, ChangedImage, ExportChanges, HeldOut, Store, file_sha256, thumb_name,
)

LABELS = ["cat", "dog", "b<i>rd"]  # a name that must be escaped
ROOT = Path(__file__).resolve().parents[1]


class Page(HTMLParser):
    """The page's pictures, figures by grid, tables' text, section ids and every URL it could fetch."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.grids: dict[str, list[dict[str, str]]] = {}
        self.sections: list[str] = []
        self.urls: list[str] = []
        self.text: list[str] = []
        self._grid: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "section":
            self.sections.append(a.get("id", ""))
        if tag == "div" and "grid" in (a.get("class") or "").split():
            self._grid = a.get("id")
            self.grids[self._grid] = []
        if tag == "figure" and self._grid:
            self.grids[self._grid].append(a)
        for key in ("src", "href"):
            if a.get(key) and not a[key].startswith(("data:", "#")):
                self.urls.append(a[key])
        if tag in ("script", "link", "iframe"):
            self.urls.append(f"<{tag}>")

    def handle_data(self, data):
        self.text.append(data)


def jpeg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def run(tmp_path) -> RunDir:
    """A run of 3 classes: 6 test + 3 val images with known probabilities, an int8 export that changed two
    top-1s, its parity report, and a device's verify and bench results (two of each, one newer)."""
    from edgecls.optimize.gate import compare

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    cfg = TrainConfig(data="d", out=str(run.path), size=32)
    run.write_json(run.config_json, {"train": asdict(cfg)})
    run.write_labels(LABELS)
    test = [("cat/1.jpg", 0), ("cat/2.jpg", 0), ("dog/3.jpg", 1), ("dog/4.jpg", 1), ("b/5.jpg", 2), ("b/6.jpg", 2)]
    val = [("cat/7.jpg", 0), ("dog/8.jpg", 1), ("b/9.jpg", 2)]
    train = [(f"cat/t{i}.jpg", 0) for i in range(4)] + [(f"dog/t{i}.jpg", 1) for i in range(4)]
    run.write_json(run.split_json, {"root": str(tmp_path / "data"), "layout": "classes", "seed": 0, "classes": LABELS,
                                    "train": train, "val": val, "test": test})
    run.write_json(run.scan_json, {"skipped": [{"path": "dog/<bad>.jpg", "reason": "corrupt or truncated"}]})
    rows = [{"phase": "head", "epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4},
            {"phase": "fine_tune", "epoch": 2, "loss": 0.7, "accuracy": 0.8, "val_loss": 0.9, "val_accuracy": 0.6}]
    run.write_json(run.history_json, {"epochs": rows})
    run.write_json(run.metrics_json, {"evaluated_on": "test", "test_accuracy": 0.5, "n_test": 6})
    run.model_path.write_bytes(b"float model")
    probs = np.array([[0.9, 0.05, 0.05],   # cat right
                      [0.2, 0.7, 0.1],     # cat -> dog (p true 0.2)
                      [0.1, 0.85, 0.05],   # dog right
                      [0.6, 0.35, 0.05],   # dog -> cat (p true 0.35)
                      [0.05, 0.9, 0.05],   # bird -> dog (p true 0.05): the worst
                      [0.1, 0.1, 0.8],     # bird right
                      [0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]], np.float32)
    items = [(r, lab, "test") for r, lab in test] + [(r, lab, "val") for r, lab in val]
    store = Store(run)
    store.write_predictions(HeldOut("model.keras", file_sha256(run.model_path), LABELS, items, probs, 32))
    for i, (rel, _, _) in enumerate(items):
        if rel != "dog/4.jpg":  # one picture missing: shown as a grey box, never a broken image
            store.write_picture(thumb_name(rel), jpeg((20 * i, 100, 200)))
    store.write_picture("cam/a.jpg", jpeg((255, 0, 0)))
    store.write_gradcam(CamSet(file_sha256(run.model_path), "backbone/out_relu", "test",
                               [CamImage("cat/1.jpg", 0, 0, 0.9, "cam/a.jpg", (0.5, 0.25)),
                                CamImage("b/5.jpg", 2, 1, 0.9, "cam/a.jpg", (0.1, 0.9))]))
    store.write_samples({name: [] for name in LABELS})
    run.export_dir.mkdir()
    tflite = run.export_dir / "model_int8.tflite"
    tflite.write_bytes(b"int8 file")
    lite = probs.copy()
    lite[2] = [0.5, 0.45, 0.05]   # dog right -> cat: a clear decision (float margin 0.75)
    lite[6] = [0.45, 0.5, 0.05]   # val cat right -> dog: also clear
    y = np.array([lab for _, lab, _ in items])
    report = compare(probs, lite, y, LABELS)
    report.source, report.model = "run test+val splits", str(tflite)
    (run.export_dir / "parity_int8.json").write_text(json.dumps(report.as_json()))
    run.write_json(run.export_dir / "model_int8.card.json", {
        "model": "model_int8.tflite", "mode": "int8", "file_bytes": 2_500_000, "gzip_bytes": 2_000_000,
        "parity": {"report": "parity_int8.json"}, "parity_passed": report.passed, "float_model": "model.keras",
        "quantization": {"path": "ptq", "cost_vs_ptq": None}})
    changed = [ChangedImage("dog/3.jpg", 1, "test", 1, 0, 0.85, 0.5, 0.75, True),
               ChangedImage("cat/7.jpg", 0, "val", 0, 1, 0.8, 0.5, 0.7, True)]
    store.write_changes(ExportChanges("model_int8.tflite", file_sha256(tflite), "model.keras",
                                      file_sha256(run.model_path), 9, 0.1, changed, {"cat": 1, "dog": 1, LABELS[2]: 0},
                                      report.tflite_accuracy, report.float_accuracy, 1.25))
    host = run.path / "device" / "pi5"
    host.mkdir(parents=True)
    for stamp, agreement in (("20260101T000000Z", 0.5), ("20260102T000000Z", 1.0)):
        run.write_json(host / f"verify_model_int8_{stamp}.json", {
            "passed": agreement == 1.0, "n_images": 30, "top1_agreement": agreement, "flipped": 0, "flipped_clear": 0,
            "bit_identical": True, "host_runtime": "ai_edge_litert 1.2", "device_runtime": "tflite_runtime 2.14"})
        run.write_json(host / f"bench_model_int8_{stamp}.json", {
            "machine": {"board": "Raspberry Pi 5 Model B"},
            "results": [{"model": "/home/pi/model_int8.tflite", "threads": 4, "xnnpack": True,
                         "latency_ms": {"p50": 3.0 + agreement, "p90": 4.0}, "fps": 300.0, "init_ms": 12.0,
                         "size_bytes": 2_500_000, "runtime": "tflite_runtime"}]})
    return run


def _page(run: RunDir) -> tuple[str, Page]:
    from edgecls.report.refresh import write_report

    path = write_report(run, collect=False)
    text = path.read_text()
    return text, Page(text)


def test_page_holds_every_part_from_the_runs_files(run):
    text, page = _page(run)
    assert page.sections == ["data", "training", "mistakes", "attention", "int8", "device", "confidence"]
    assert page.urls == []  # nothing to fetch: no script, no stylesheet, every picture inside the page
    for src in page.imgs:  # every picture decodes
        assert src.startswith("data:image/jpeg;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).load()
    # Mistakes of the test split (not val), worst first: least probability on the true class.
    mistakes = page.grids["mistake-grid"]
    assert [m["data-name"] for m in mistakes] == ["b/5.jpg", "cat/2.jpg", "dog/4.jpg"]
    assert [(m["data-true"], m["data-pred"]) for m in mistakes] == [(LABELS[2], "dog"), ("cat", "dog"), ("dog", "cat")]
    assert mistakes[0]["data-score"] == "0.9000"
    assert "no picture" in text  # dog/4.jpg has no thumbnail: a box, not a broken <img>
    assert len(page.imgs) == (3 - 1) + 2 + 2  # mistakes (one without a picture), heatmaps, changed images
    # The int8 section lists exactly the recorded changes, clear decisions first, and says they match parity.
    changed = page.grids["changed-model_int8"]
    assert [c["data-name"] for c in changed] == ["dog/3.jpg", "cat/7.jpg"]
    assert "These are exactly the changes its parity report counts." in text
    assert page.grids["cam-right"][0]["data-name"] == "cat/1.jpg" and page.grids["cam-wrong"][0]["data-name"] == "b/5.jpg"
    body = " ".join(page.text)
    assert "dog/<bad>.jpg" in body and "<bad>" not in text and "b<i>rd" not in text  # escaped, shown as text
    assert "accuracy 50.0% on 6 test images" in body
    assert "2.50" in body and "1.25" in body  # the card's size, the recorded host latency
    assert "Raspberry Pi 5 Model B" in body and "4.00" in body and "0.5000" not in body  # newest verify/bench only
    assert "Expected calibration error of the scores as trained" in body and "recorded by training" not in body


def test_calibration_recorded_by_training_is_drawn_and_odd_layouts_do_not_break_the_page(run):
    metrics = json.loads(run.metrics_json.read_text())
    metrics["calibration"] = {"temperature": 1.7, "ece_before": 0.12, "ece_after": 0.03,
                              "bins": [{"confidence": 0.55, "accuracy": 0.5, "count": 4},
                                       {"confidence": 0.95, "accuracy": 0.9, "count": 5}]}
    run.write_json(run.metrics_json, metrics)
    text, page = _page(run)
    body = " ".join(page.text)
    assert "Calibration recorded by training" in body and "ece_after" in body and "0.03" in body
    assert "before temperature scaling (T = 1.7)" in text and 'aria-label="reliability, test split"' in text
    for odd in ("n/a", [1, 2], {"bins": "none", "note": "x"}, {"per_bin": [{"conf": "?"}]}, {}):
        metrics["calibration"] = odd
        run.write_json(run.metrics_json, metrics)
        _, page = _page(run)
        assert "confidence" in page.sections  # still drawn from the predictions


def test_stale_predictions_are_not_shown_and_the_page_says_how_to_refresh(run):
    run.model_path.write_bytes(b"a retrained model")
    text, page = _page(run)
    assert "mistake-grid" not in page.grids and "attention" not in page.sections
    assert "changed since its predictions were made: run &#x27;edgecls report RUN&#x27;" in text


def test_a_failed_write_leaves_the_previous_page_whole(run, monkeypatch):
    from edgecls.report import page as page_module

    first, _ = _page(run)
    monkeypatch.setattr(page_module, "render", lambda content: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        _page(run)
    assert run.report_html.read_text() == first
    assert sorted(p.name for p in run.path.iterdir() if p.name.startswith(".")) == []  # no temp file left


def test_redrawing_needs_no_tensorflow(run):
    """What deploy does: the page from the run's files, in a process that never imports TensorFlow."""
    code = ("import sys; from edgecls.report.refresh import write_report; "
            f"write_report({str(run.path)!r}, collect=False); "
            "heavy = [m for m in ('tensorflow', 'tf_keras', 'keras') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]" and run.report_html.is_file()


def test_reliability_and_ece_by_hand():
    from edgecls.report.calibration import from_metrics, reliability, with_temperature

    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.65, 0.35], [0.65, 0.35]])
    r = reliability(probs, np.array([0, 1, 0, 0]), bins=10)
    # Bin 0.9-1.0: confidence 0.95, accuracy 0.5; bin 0.6-0.7: confidence 0.65, accuracy 1.0.
    assert r.count[9] == 2 and r.accuracy[9] == 0.5 and r.count[6] == 2 and r.accuracy[6] == 1.0
    assert r.ece == pytest.approx(0.5 * 0.45 + 0.5 * 0.35)
    assert reliability(np.array([[1.0, 0.0]]), np.array([0])).count[-1] == 1  # 1.0 lands in the top bin
    cooled = with_temperature(probs, 2.0)
    assert np.all(cooled.max(1) < probs.max(1)) and np.allclose(cooled.sum(1), 1.0)
    assert from_metrics(None) is None and from_metrics("x") is None and from_metrics({"bins": []}) is None
    rec = from_metrics({"before": {"ece": 0.1}, "after": {"ece": 0.02, "T": 1.5}})
    assert rec.figures == {"before.ece": 0.1, "after.ece": 0.02, "after.T": 1.5} and rec.temperature == 1.5


def test_a_bare_run_still_gets_a_page_that_says_what_is_missing(tmp_path):
    """Only config.json, labels.txt and an export's card (what deploy's tests and an old run have): no error,
    every part that needs more is left out, and the notes say how to get it."""
    from edgecls.report.refresh import write_report

    run = RunDir(tmp_path / "run")
    (run.export_dir).mkdir(parents=True)
    run.config_json.write_text(json.dumps({"train": {"image_size": 32}}))
    run.write_labels(["a", "b"])
    (run.export_dir / "model_int8.card.json").write_text(json.dumps({"mode": "int8"}))
    (run.export_dir / "model_int8.tflite").write_bytes(b"x")
    page = Page(write_report(run, collect=False).read_text())
    assert page.sections == ["notes", "int8"] and page.imgs == [] and page.urls == []
    notes = " ".join(page.text)
    assert "split.json is missing" in notes and "no predictions of model.keras yet" in notes
    assert "the images model_int8.tflite changed are not computed yet" in notes
