"""Every file argument of every command, fed what a user's disk really holds by mistake: a zero-byte
file, random bytes, a folder, and a real file of the wrong kind. Each is one ``Error:`` line that
names the argument the user gave (its path, or the option), a non-zero exit, no traceback, never
``unexpected``, and the user's files untouched.

The arguments that need a real model or run beside them (``parity``, ``verify --golden``, ...) use
the session's exported run; the rest run on a small folder of photos and fail before TensorFlow loads.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgecls.cli import cli

KINDS = ("empty", "random", "folder", "wrong")


def _write_bad(path: Path, kind: str, wrong: Path) -> None:
    """``path`` made into one of :data:`KINDS` (``wrong``: a real file of another kind to copy)."""
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(len(str(path))).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "folder":
        path.mkdir()
    else:
        shutil.copyfile(wrong, path)


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def disk(tmp_path_factory) -> Path:
    """Photos in class folders, one photo and one text file (wrong-kind files to copy)."""
    root = tmp_path_factory.mktemp("bad_files")
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / "data" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "data" / cls / f"{i}.png")
    shutil.copyfile(root / "data" / "cat" / "0.png", root / "photo.png")
    (root / "notes.txt").write_text("shopping list\n")
    return root


# (name, args with {bad} where the bad file goes, the bad file's name, the wrong-kind file to copy,
#  the option named when the message names it rather than the path)
NO_MODEL = [
    ("bench model", ["bench", "{bad}"], "model.tflite", "{d}/photo.png", None),
    ("verify model", ["verify", "{bad}"], "model.tflite", "{d}/photo.png", None),
    ("camera model", ["camera", "-m", "{bad}", "--source", "{d}/data/cat"], "model.tflite", "{d}/photo.png", None),
    ("bench-compare report", ["bench-compare", "{bad}"], "pi4.json", "{d}/photo.png", None),
    ("train data", ["train", "{bad}", "-o", "{tmp}/run", "--weights", "none"], "photos", "{d}/photo.png", None),
    ("train weights", ["train", "{d}/data", "-o", "{tmp}/run", "--weights", "{bad}"], "backbone.h5",
     "{d}/photo.png", None),
    ("train labels-csv", ["train", "{d}/data", "-o", "{tmp}/run", "--labels-csv", "{bad}", "--weights", "none"],
     "labels.csv", "{d}/photo.png", None),
    ("train negatives", ["train", "{d}/data", "-o", "{tmp}/run", "--negatives", "{bad}", "--weights", "none"],
     "negatives", "{d}/photo.png", None),
    ("data check data", ["data", "check", "{bad}"], "photos", "{d}/photo.png", None),
    ("data check labels-csv", ["data", "check", "{d}/data", "--labels-csv", "{bad}"], "labels.csv",
     "{d}/photo.png", None),
    ("prune run", ["prune", "{bad}"], "run", "{d}/photo.png", None),
    ("export run", ["export", "{bad}", "--int8"], "run", "{d}/photo.png", None),
    ("collect source", ["collect", "{tmp}/new", "-l", "cat", "--source", "{bad}", "-n", "2", "--interval", "0"], "video.mp4",
     "{d}/notes.txt", None),
]
WITH_MODEL = [
    ("parity model", ["parity", "{run}", "{bad}"], "model.tflite", "{d}/photo.png", None),
    ("parity float-model", ["parity", "{run}", "{model}", "--float-model", "{bad}"], "float.keras", "{model}", None),
    ("verify golden", ["verify", "{model}", "--golden", "{bad}"], "golden.npz", "{model}", None),
    ("verify labels", ["verify", "{model}", "--labels", "{bad}"], "labels.txt", "{model}", None),
    ("camera labels", ["camera", "-m", "{model}", "--labels", "{bad}", "--source", "{d}/data/cat"], "labels.txt",
     "{model}", None),
    ("camera source", ["camera", "-m", "{model}", "--source", "{bad}"], "video.mp4", "{model}", None),
    ("bench images", ["bench", "{model}", "--images", "{bad}"], "images", "{model}", None),
    ("export parity-data", ["export", "{run}", "--int8", "--out", "{tmp}/out", "--parity-data", "{bad}"], "photos",
     "{model}", None),
]


def _invoke(args: list[str], fill: dict[str, str], monkeypatch) -> tuple[int, str, BaseException | None]:
    monkeypatch.delenv("EDGECLS_DEBUG", raising=False)
    result = CliRunner().invoke(cli, [a.format(**fill) for a in args])
    return result.exit_code, result.output, result.exception


def _check(tmp_path: Path, disk: Path, case: tuple, kind: str, monkeypatch, **extra: str) -> None:
    name, args, bad_name, wrong, option = case
    fill = {"d": str(disk), "tmp": str(tmp_path), **extra}
    bad = tmp_path / "mine" / bad_name
    bad.parent.mkdir()
    _write_bad(bad, kind, Path(wrong.format(**fill)))
    watched = [disk] + [Path(p) for p in extra.values() if Path(p).is_dir()]
    before = [_tree(w) for w in watched] + [_tree(bad.parent)]
    code, out, exc = _invoke(args, {**fill, "bad": str(bad)}, monkeypatch)
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert code in (1, 2), (code, out, exc)
    assert len(errors) == 1, out
    assert "Traceback" not in out and "unexpected" not in errors[0], out
    named = bad.stem in errors[0] or (option is not None and option in errors[0])
    assert named, f"the error does not name {bad}: {errors[0]}"
    assert [_tree(w) for w in watched] + [_tree(bad.parent)] == before  # nothing of the user's changed


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", NO_MODEL, ids=[c[0] for c in NO_MODEL])
def test_a_bad_file_argument_is_one_line_naming_it(disk, tmp_path, case, kind, monkeypatch):
    _check(tmp_path, disk, case, kind, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", WITH_MODEL, ids=[c[0] for c in WITH_MODEL])
def test_a_bad_file_beside_a_real_model_is_one_line_naming_it(disk, exported_run, tmp_path, case, kind, monkeypatch):
    model = exported_run.path / "export" / "model_int8.tflite"
    assert model.is_file()
    _check(tmp_path, disk, case, kind, monkeypatch, run=str(exported_run.path), model=str(model))
