"""Labels from a CSV file: every row problem with its message, as a table (``edgecls data check``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgecls.cli import cli
from edgecls.core.errors import EdgeclsError

N_PER_CLASS = 5  # img/a0..a4.jpg are cats, img/b0..b4.jpg dogs in BASE


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("csv_data") / "data"
    (root / "img" / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix in "abc":
        for i in range(N_PER_CLASS):
            px = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(px).save(root / "img" / f"{prefix}{i}.jpg", quality=90)
    (root / "img" / "zero.jpg").write_bytes(b"")
    good = (root / "img" / "a0.jpg").read_bytes()
    (root / "img" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    return root


def _base(split: bool = False) -> list[str]:
    rows = []
    for i in range(N_PER_CLASS):
        # With a split column: 3 train, 1 val, 1 test per class.
        s = "," + ("train", "train", "train", "val", "test")[i] if split else ""
        rows += [f"img/a{i}.jpg,cat{s}", f"img/b{i}.jpg,dog{s}"]
    return rows


HEADER = "path,label"
BASE = "\n".join([HEADER, *_base()])  # lines 1..11; an extra row is line 12
SPLIT_BASE = "\n".join(["path,label,split", *_base(split=True)])
OK = "OK: {n} usable images in 2 classes ({layout} layout, labels from {csv})."

CASES = [
    # (csv text, extra args, exit code, expected lines ({csv} = the CSV path))
    pytest.param(BASE + "\nimg/nope.jpg,cat", [], 0,
                 ["Skipped 1 row(s) of {csv}:", "  line 12: img/nope.jpg: missing file",
                  OK.format(n=10, layout="classes", csv="{csv}")], id="missing-file"),
    pytest.param(BASE + "\n./img/a0.jpg,cat", [], 0,
                 ["  line 12: ./img/a0.jpg: duplicate path (first listed on line 2)"], id="duplicate-path"),
    pytest.param(BASE + "\nimg/c0.jpg,cat\nimg/c0.jpg,dog", [], 0,
                 ["Skipped 2 row(s) of {csv}:",
                  "  line 12: img/c0.jpg: conflicting labels for one file: 'cat', 'dog' (also line 13)",
                  "  line 13: img/c0.jpg: conflicting labels for one file: 'cat', 'dog' (also line 12)"],
                 id="conflicting-labels"),
    pytest.param(BASE + "\nimg/c0.jpg,", [], 0, ["  line 12: img/c0.jpg: empty label"], id="empty-label"),
    pytest.param(BASE + "\nimg/c0.jpg,  ", [], 0, ["  line 12: img/c0.jpg: empty label"], id="blank-label"),
    pytest.param(SPLIT_BASE + "\nimg/c0.jpg,cat,training", [], 0,
                 ["  line 12: img/c0.jpg: unknown split name 'training'; use train, val or test"],
                 id="unknown-split"),
    pytest.param(SPLIT_BASE + "\nimg/c0.jpg,cat,", [], 0,
                 ["  line 12: img/c0.jpg: unknown split name empty; use train, val or test"], id="empty-split"),
    pytest.param(SPLIT_BASE + "\nimg/a0.jpg,cat,val", [], 0,
                 ["  line 2: img/a0.jpg: one file in several splits: train, val (also line 12)"],
                 id="file-in-two-splits"),
    pytest.param(BASE + "\nimg/c0.jpg,fox", [], 1,
                 ["Error: class 'fox' has too few images: 1 usable row(s) in {csv}; "
                  "needs at least 3 (one each for train, val and test)"], id="class-too-few"),
    pytest.param(BASE + "\nimg/c0.jpg,fox\nimg/c1.jpg,fox\nimg/nope.jpg,fox", [], 1,
                 ["  line 14: img/nope.jpg: missing file",
                  "Error: class 'fox' has too few images: 2 usable row(s) in {csv}; "
                  "needs at least 3 (one each for train, val and test)"], id="class-too-few-after-skips"),
    pytest.param("\n".join(r for r in SPLIT_BASE.splitlines() if not r.startswith("img/b3")), [], 1,
                 ["Error: class 'dog' has too few images: no usable val row in {csv}; "
                  "every class needs at least one val image"], id="class-missing-in-val"),
    pytest.param("\n".join(r for r in SPLIT_BASE.splitlines() if not r.endswith(",val")), [], 1,
                 ["Error: {csv} has train rows but no usable val rows; mark some rows 'val', "
                  "or drop the split column to let edgecls split"], id="no-val-rows"),
    pytest.param("\n".join(r for r in SPLIT_BASE.splitlines() if not r.endswith(",test")), [], 0,
                 ["(no test rows: the val split doubles as the test split)",
                  OK.format(n=8, layout="splits", csv="{csv}")], id="no-test-rows"),
    pytest.param(BASE + "\nimg/c0.jpg", [], 0,
                 ["  line 12: img/c0.jpg: expected path,label[,split] (too few columns)"], id="one-column"),
    pytest.param(BASE + "\n,cat", [], 0, ["  line 12: (no path): empty path"], id="empty-path"),
    pytest.param(BASE + "\nimg/sub,cat", [], 0, ["  line 12: img/sub: is a folder, not an image file"], id="folder"),
    pytest.param(BASE + "\nimg/zero.jpg,cat", [], 0, ["  line 12: img/zero.jpg: empty file (0 bytes)"],
                 id="empty-file"),
    pytest.param(BASE + "\nimg/truncated.jpg,cat", ["--decode"], 0,
                 ["  line 12: img/truncated.jpg: corrupt or truncated ("], id="corrupt-file-decoded",
                 marks=pytest.mark.slow),  # loads TensorFlow
    pytest.param("\n".join(r for r in BASE.splitlines() if "dog" not in r), [], 1,
                 ["Error: {csv} needs usable rows of at least 2 classes (found only 'cat')"], id="one-class"),
    pytest.param("path,label\n", [], 1, ["Error: {csv} needs usable rows of at least 2 classes (found none)"],
                 id="header-only"),
    pytest.param("", [], 1, ["Error: {csv} has no rows; expected path,label[,split]"], id="empty-csv"),
    pytest.param(None, [], 1, ["Error: labels CSV not found: {csv}"], id="csv-not-found"),
    # What is accepted: no header, columns by name in any order, ids, ; separators, a BOM.
    pytest.param("\n".join(_base()), [], 0, [OK.format(n=10, layout="classes", csv="{csv}"), "Skipped 0 files."],
                 id="no-header"),
    pytest.param("label,image_name\n" + "\n".join(",".join(r.split(",")[::-1]) for r in _base()), [], 0,
                 [OK.format(n=10, layout="classes", csv="{csv}")], id="header-any-order"),
    pytest.param("\ufeffpath;label\n" + "\n".join(r.replace(",", ";") for r in _base()), [], 0,
                 [OK.format(n=10, layout="classes", csv="{csv}")], id="semicolons-and-bom"),
    pytest.param("\n".join(r.replace("cat", "0").replace("dog", "1") for r in BASE.splitlines()), [], 0,
                 ["class  images", "0" + " " * 11 + "5", "1" + " " * 11 + "5"], id="integer-ids"),
    pytest.param("\n".join(r.replace("cat", "0").replace("dog", "2") for r in BASE.splitlines()), [], 1,
                 ["Error: class '1' has too few images: 0 usable row(s) in {csv}; "
                  "needs at least 3 (one each for train, val and test)"], id="integer-ids-with-a-gap"),
]


@pytest.mark.parametrize("text, extra, code, expected", CASES)
def test_data_check_labels_csv_table(data_dir, tmp_path, text, extra, code, expected):
    csv_path = tmp_path / "labels.csv"
    if text is not None:
        csv_path.write_text(text + "\n", encoding="utf-8")
    decode = "--decode" in extra
    args = ["data", "check", str(data_dir), "--labels-csv", str(csv_path)] + ([] if decode else ["--no-decode"])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == code, result.output
    lines = result.output.splitlines()
    for want in expected:
        want = want.format(csv=csv_path)
        assert any(line.startswith(want) if want.endswith("(") else line == want for line in lines), (
            f"{want!r} not in:\n{result.output}")
    if code == 1:
        assert "Traceback" not in result.output and result.output.count("Error:") == 1


def test_paths_relative_to_the_csv_folder_and_json_report(data_dir, tmp_path):
    # The CSV sits beside the images (DATA/img/labels.csv) and names them without the img/ prefix.
    csv_path = data_dir / "img" / "labels.csv"
    csv_path.write_text("\n".join(r.replace("img/", "") for r in _base()) + "\nnope.jpg,cat\n")
    report = tmp_path / "report.json"
    try:
        result = CliRunner().invoke(cli, ["data", "check", str(data_dir), "--labels-csv", str(csv_path),
                                          "--no-decode", "--json", str(report)])
    finally:
        csv_path.unlink()
    assert result.exit_code == 0, result.output
    d = json.loads(report.read_text())
    assert d["labels_csv"] == str(csv_path) and d["classes"] == ["cat", "dog"]
    assert d["counts"] == {"all": {"cat": 5, "dog": 5}}
    assert d["skipped"] == [{"path": "nope.jpg", "reason": "line 11: missing file"}]


def test_scan_gives_the_folder_contract(data_dir, tmp_path):
    """Paths come back relative to DATA, labels in class order, the split as for folders."""
    from edgecls.data import make_split, scan_labels_csv

    csv_path = tmp_path / "l.csv"
    csv_path.write_text("\n".join([HEADER, *(r.replace("img/", "./img/") for r in _base())]))
    scan = scan_labels_csv(data_dir, csv_path, decode=False)
    assert scan.layout == "classes" and scan.classes == ["cat", "dog"] and scan.labels_csv == str(csv_path)
    assert scan.files["all"][:2] == [("img/a0.jpg", 0), ("img/a1.jpg", 0)]
    split = make_split(scan, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert {s: len(v) for s, v in split.items()} == {"train": 6, "val": 2, "test": 2}

    csv_path.write_text(SPLIT_BASE)
    scan = scan_labels_csv(data_dir, csv_path, decode=False)
    split = make_split(scan, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert split["val"] == [("img/a3.jpg", 0), ("img/b3.jpg", 1)]  # the CSV's split, used as given
    assert split["test"] == [("img/a4.jpg", 0), ("img/b4.jpg", 1)]

    csv_path.write_text(BASE + "\nimg/c0.jpg,fox")
    with pytest.raises(EdgeclsError, match="class 'fox' has too few images"):
        scan_labels_csv(data_dir, csv_path, decode=False)
