"""Labels: labels.txt beside a model must agree with the labels embedded in it, unless --labels.

Embedded labels are packed as the TFLite metadata populator packs associated files: a zip
appended to the flatbuffer (the interpreter ignores the tail; ``labels_from_metadata`` reads it).
"""

from __future__ import annotations

import io
import zipfile

import pytest
from click.testing import CliRunner

from edgecls.cli import cli
from edgecls.core.errors import EdgeclsError
from edgecls.runtime.classifier import NO_LABELS_SOURCE, Classifier
from edgecls.runtime.golden import write_golden_set

pytestmark = pytest.mark.slow  # converts a model (session fixture)

CATS = ["cat", "dog", "bird"]
SWAPPED = ["dog", "cat", "bird"]


def with_embedded_labels(model: bytes, labels: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("labels.txt", "".join(f"{n}\n" for n in labels))
    return model + buf.getvalue()


def make_model(tmp_path, tiny_tflite, *, beside=None, embedded=None, name="model_int8.tflite"):
    model = tmp_path / name
    raw = tiny_tflite["int8"].read_bytes()
    model.write_bytes(with_embedded_labels(raw, embedded) if embedded else raw)
    if beside is not None:
        (tmp_path / "labels.txt").write_text("".join(f"{n}\n" for n in beside))
    return model


def conflict(tmp_path, from_file, embedded, first, a, b, *, option: bool = False):
    """The conflict message; ``option``: the command has --labels, and the message offers it."""
    def short(names):
        return f"{len(names)}: {', '.join(names)}"
    return (f"{tmp_path / 'labels.txt'} ({short(from_file)}) disagrees with the labels embedded in "
            f"model_int8.tflite ({short(embedded)}); first difference at class {first}: {a!r} vs {b!r}. "
            "Remove or fix the stale labels file" + (", or pass --labels FILE to choose" if option else ""))


# beside labels.txt, embedded labels, explicit labels -> labels, source (or an error)
CASES = [
    (None, None, None, ["class_0", "class_1", "class_2"], NO_LABELS_SOURCE),
    (CATS, None, None, CATS, "{dir}/labels.txt"),
    (None, CATS, None, CATS, "model metadata"),
    (CATS, CATS, None, CATS, "{dir}/labels.txt (= model metadata)"),
    (SWAPPED, CATS, None, EdgeclsError, (0, "dog", "cat")),
    (["cat", "dog"], CATS, None, EdgeclsError, (2, "(none)", "bird")),
    (SWAPPED, CATS, ["x", "y", "z"], ["x", "y", "z"], "given"),
    (None, CATS, SWAPPED, SWAPPED, "given"),
]


@pytest.mark.parametrize("beside, embedded, given, expect, source", CASES)
def test_label_resolution(tiny_tflite, tmp_path, beside, embedded, given, expect, source):
    model = make_model(tmp_path, tiny_tflite, beside=beside, embedded=embedded)
    if expect is EdgeclsError:
        with pytest.raises(EdgeclsError) as e:
            Classifier(model, labels=given, num_threads=1)
        assert str(e.value) == conflict(tmp_path, beside, embedded, *source)
        return
    clf = Classifier(model, labels=given, num_threads=1)
    assert clf.labels == expect
    assert clf.labels_source == source.format(dir=tmp_path)


@pytest.fixture
def conflicting(tiny_tflite, tmp_path):
    """A model embedding CATS with a golden set, then a stale labels.txt (SWAPPED) beside it."""
    model = make_model(tmp_path, tiny_tflite, embedded=CATS)
    write_golden_set(model, tiny_tflite["images"], label_names=CATS)
    (tmp_path / "labels.txt").write_text("".join(f"{n}\n" for n in SWAPPED))
    (tmp_path / "mine.txt").write_text("".join(f"{n}\n" for n in CATS))
    (tmp_path / "swapped.txt").write_text("".join(f"{n}\n" for n in SWAPPED))
    frames = tmp_path / "frames"
    frames.mkdir()
    from PIL import Image

    Image.fromarray(tiny_tflite["images"][0]).save(frames / "a.png")
    return tmp_path, model


# Every device command that loads the model: args -> exit code -> message ({m} model, {d} folder).
CLI_CASES = [
    (["verify", "{m}"], 1, "conflict --labels"),
    (["verify", "{m}", "--labels", "{d}/mine.txt"], 0, "result         : PASSED"),
    # Explicit but different from what the host named: verify says so.
    (["verify", "{m}", "--labels", "{d}/swapped.txt"], 1,
     "FAILED: this device names the classes dog, cat, bird (given) but the host named them cat, dog, bird"),
    (["bench", "{m}", "--runs", "2", "--warmup", "0"], 1, "conflict"),
    (["doctor", "--model", "{m}"], 1, "conflict"),
    (["camera", "--model", "{m}", "--source", "{d}/frames", "--headless", "--max-frames", "1"], 1, "conflict --labels"),
    (["camera", "--model", "{m}", "--source", "{d}/frames", "--headless", "--max-frames", "1",
      "--labels", "{d}/mine.txt"], 0, "1 frames from"),
]


@pytest.mark.parametrize("args, code, message", CLI_CASES)
def test_device_commands_refuse_conflicting_labels_unless_chosen(conflicting, args, code, message):
    d, model = conflicting
    args = [a.format(m=model, d=d) for a in args]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    if message.startswith("conflict"):  # bench and doctor have no --labels: the message offers none
        assert result.output.rstrip().splitlines()[-1] == "Error: " + conflict(
            d, SWAPPED, CATS, 0, "dog", "cat", option=message.endswith("--labels"))
    else:
        assert message in result.output
