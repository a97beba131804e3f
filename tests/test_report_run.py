"""The report of a real run (a copy of ``exported_run``: trained, pruned, two int8 exports), checked in a real
headless Chromium (Debian's chromium + chromium-driver) opened on the file with the network cut off; the
mistakes and changed top-1s on the page are compared with an independent prediction; ``edgecls report``,
``edgecls explain`` and the camera web view's link, as users run them."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgecls.cli import cli

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1200,900",
                  # No network: any fetch the page tried would fail (and leave an image undecoded).
                  "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND")


@pytest.fixture(scope="module")
def reported(exported_run, tmp_path_factory):
    """A private copy of exported_run with its report written (predictions, heatmaps, changes collected)."""
    from edgecls.report.refresh import write_report

    run = tmp_path_factory.mktemp("reported") / "run"
    shutil.copytree(exported_run.path, run)
    write_report(run)
    return run


def _held_out(run: Path, splits: tuple[str, ...]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, uint8 images, labels) of the run's ``splits``, in order, loaded by the data module."""
    from edgecls import data
    from edgecls.core.rundir import RunDir

    r = RunDir.open(run)
    root, split = data.load_split(r)
    items = [it for s in splits for it in split[s]]
    x, y = data.load_images(root, items, r.train_config().size)
    return [rel for rel, _ in items], x, y


def _browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        pytest.skip("needs Debian's chromium and chromium-driver (tools/install_system_packages.sh)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


NAMES_JS = "return Array.from(document.querySelectorAll(arguments[0] + ' figure')).map(f => f.dataset.name)"


@pytest.mark.slow
def test_page_in_chromium_shows_the_real_mistakes_and_int8_changes(reported, tmp_path):
    from edgecls.optimize.parity import tflite_scores
    from edgecls.train.model_io import load_model

    driver = _browser(tmp_path)
    try:
        driver.get(reported.joinpath("report.html").resolve().as_uri())
        images = driver.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)"
                                        ".filter(n => !n.startsWith('data:'))")
        mistakes = driver.execute_script(NAMES_JS, "#mistake-grid")
        changed = {stem: driver.execute_script(NAMES_JS, f"#changed-{stem}") for stem in ("model_int8", "model_pruned_int8")}
        sections = driver.execute_script("return Array.from(document.querySelectorAll('section')).map(s => s.id)")
    finally:
        driver.quit()
    assert len(images) > 20 and all(ok and width > 0 for ok, width in images), images
    assert fetched == []
    assert {"data", "training", "mistakes", "attention", "int8", "confidence"} <= set(sections)

    # The test split's mistakes, by an independent prediction of the float model, worst first.
    names, x, y = _held_out(reported, ("test",))
    model = load_model(reported / "model.keras")
    p = model.predict(x.astype(np.float32), verbose=0)
    wrong = np.flatnonzero(p.argmax(1) != y)
    assert len(wrong) > 0 and sorted(mistakes) == sorted(names[i] for i in wrong)
    assert mistakes[0] == names[wrong[np.argmin(p[wrong, y[wrong]])]]  # the least probability on the truth
    metrics = json.loads((reported / "metrics.json").read_text())
    cm = np.asarray(metrics["confusion_matrix"])
    assert metrics["evaluated_on"] == "test" and len(mistakes) == cm.sum() - np.trace(cm)

    # Each int8 file: exactly the held-out images whose top-1 it changed (by the device runtime, independently),
    # as many as its parity report counts.
    names, x, y = _held_out(reported, ("test", "val"))
    for stem, float_name in (("model_int8", "model.keras"), ("model_pruned_int8", "model_pruned.keras")):
        float_p = load_model(reported / float_name).predict(x.astype(np.float32), batch_size=32, verbose=0)
        lite_p = tflite_scores(reported / "export" / f"{stem}.tflite", x)
        expected = {names[i] for i in np.flatnonzero(float_p.argmax(1) != lite_p.argmax(1))}
        parity = json.loads((reported / "export" / f"parity_{stem[len('model_'):]}.json").read_text())
        assert set(changed[stem]) == expected and len(changed[stem]) == parity["changed"]["all"], stem
    assert any(changed.values())  # the tiny model's near-ties do flip: the check above was not vacuous


@pytest.mark.slow
def test_cli_report_redraws_and_explain_writes_overlays(reported, tmp_path):
    runner = CliRunner()
    before = (reported / "report.html").stat().st_mtime_ns
    result = runner.invoke(cli, ["report", str(reported), "--no-collect"])
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.output and (reported / "report.html").stat().st_mtime_ns > before

    names, _, _ = _held_out(reported, ("test",))
    root = Path(json.loads((reported / "split.json").read_text())["root"])
    photos = tmp_path / "mine"
    photos.mkdir()
    for n in names[:3]:
        shutil.copy(root / n, photos / Path(n).name)
    (photos / "notes.jpg").write_text("not a photo")
    out = tmp_path / "out"
    result = runner.invoke(cli, ["explain", str(reported), str(photos), "--out", str(out)])
    assert result.exit_code == 0, result.output
    index = json.loads((out / "explain.json").read_text())
    assert index["layer"] == "backbone/out_relu" and len(index["images"]) == 3
    from PIL import Image

    for entry in index["images"]:
        with Image.open(entry["out"]) as im:
            assert im.format == "JPEG" and im.width > 0
    assert "skipped:" in result.output and "notes.jpg" in result.output
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # atomic: no temp file left


BAD_EXPLAIN = [
    (["explain", "MISSING", "PHOTOS"], "run folder not found"),
    (["explain", "RUN", "MISSING"], "image or folder not found"),
    (["explain", "RUN", "EMPTY"], "no images in"),
    (["explain", "RUN", "NOTE"], "is not an image edgecls can read"),
    (["explain", "RUN", "PHOTOS", "--out", "NOTE"], "Invalid value for '--out': Directory"),
    (["explain", "RUN", "PHOTOS", "--layer", "nope"], "no convolutional layer 'nope'"),
    (["explain", "NOTARUN", "PHOTOS"], "is not an edgecls run"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args, message", BAD_EXPLAIN, ids=[" ".join(a) for a, _ in BAD_EXPLAIN])
def test_bad_input_to_explain_is_one_error_line(reported, tmp_path, args, message):
    from PIL import Image

    (tmp_path / "empty").mkdir()
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "photos" / "a.png")
    (tmp_path / "note.jpg").write_text("not an image")
    fill = {"RUN": str(reported), "MISSING": str(tmp_path / "missing"), "PHOTOS": str(tmp_path / "photos"),
            "EMPTY": str(tmp_path / "empty"), "NOTE": str(tmp_path / "note.jpg"), "NOTARUN": str(tmp_path / "empty")}
    result = CliRunner().invoke(cli, [fill.get(a, a) for a in args])
    assert result.exit_code == (2 if "Invalid value" in message else 1), result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_parity_with_json_in_the_run_refreshes_the_page(reported):
    """A stage's one call at its end: parity writing its report into the run brings the page up to date."""
    page = reported / "report.html"
    before = page.stat().st_mtime_ns
    model = reported / "export" / "model_int8.tflite"
    result = CliRunner().invoke(cli, ["parity", str(reported), str(model), "--json",
                                      str(reported / "export" / "parity_int8.json"), "--max-drop", "100",
                                      "--min-clear-agreement", "0"])
    assert result.exit_code == 0, result.output
    assert f"report:  {page}" in result.output and page.stat().st_mtime_ns > before


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_web_view_links_the_report_beside_the_model(tmp_path):
    """The camera's page shows the link (and serves the page) only when a report.html lies beside the model."""
    from edgecls.runtime.web import PAGE, WebView

    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    model = run / "export" / "model_int8.tflite"
    view = WebView("127.0.0.1", 0, status=lambda: {"model": str(model)})
    try:
        assert json.loads(_get(f"{view.url}status")[1])["report"] is False
        assert _get(f"{view.url}report")[0] == 404
        (run / "report.html").write_text("<!doctype html><title>the run</title>")
        assert json.loads(_get(f"{view.url}status")[1])["report"] is True
        assert _get(f"{view.url}report") == (200, b"<!doctype html><title>the run</title>")
        (run / "export" / "report.html").write_text("beside")  # a copy next to the model wins
        assert _get(f"{view.url}report") == (200, b"beside")
    finally:
        view.close()
    assert 'id="report"' in PAGE and "rep.hidden = !s.report" in PAGE
