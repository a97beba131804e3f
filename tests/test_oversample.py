"""``--balance oversample``: every class drawn equally often per epoch, seeded, after the cache;
``--balance`` / ``--labels-csv`` at the CLI boundary."""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter

import pytest
from click.testing import CliRunner

from edgecls.cli import cli
from edgecls.core.config import TrainConfig
from edgecls.core.errors import EdgeclsError

SIZE_PX = 24
COUNTS = {0: 12, 1: 3, 2: 6}  # images per class in the imbalanced training list


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory):
    """(root, items): a real synthetic folder cut to 12 / 3 / 6 images per class."""
    from edgecls.data import scan_dataset
    from edgecls.data.synth import write_synthetic_dataset

    root = tmp_path_factory.mktemp("oversample") / "data"
    write_synthetic_dataset(root, classes=3, per_class=12, size=SIZE_PX, seed=3)
    scan = scan_dataset(root, decode=False)
    items = [it for label, n in COUNTS.items() for it in [i for i in scan.files["all"] if i[1] == label][:n]]
    return root, items


def _epoch(ds) -> tuple[list[int], Counter]:
    """Labels in order, and how often each distinct image was drawn, over one pass of ``ds``."""
    labels, seen = [], Counter()
    for x, y in ds.as_numpy_iterator():
        labels += [int(v) for v in y]
        seen.update(hashlib.sha1(img.tobytes()).hexdigest() + f":{int(lab)}" for img, lab in zip(x, y))
    return labels, seen


def _draws_per_image(seen: Counter) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for key, n in seen.items():
        out.setdefault(int(key.split(":")[1]), set()).add(n)
    return out


@pytest.mark.slow  # loads TensorFlow and decodes images
def test_oversampling_draws_every_class_equally_each_epoch(imbalanced):
    from edgecls.data import build_dataset, oversampled_epoch_size

    root, items = imbalanced
    plain = build_dataset(root, items, image_size=SIZE_PX, batch_size=5, training=True, seed=1, cache="memory")
    labels, _ = _epoch(plain)
    assert Counter(labels) == COUNTS  # without oversampling: the data's own mix

    ds = build_dataset(root, items, image_size=SIZE_PX, batch_size=5, training=True, seed=1, cache="memory",
                       oversample=True)
    epochs = [_epoch(ds) for _ in range(2)]
    for labels, seen in epochs:
        assert Counter(labels) == {0: 12, 1: 12, 2: 12}  # each class as often as the largest
        assert len(labels) == oversampled_epoch_size(items) == 36
        # Whole passes over each class: every image of the 3-image class 4 times, of the 6-image
        # class twice, of the largest once. Nothing dropped, nothing drawn at random with replacement.
        assert _draws_per_image(seen) == {0: {1}, 1: {4}, 2: {2}}
    # Re-drawn every epoch, and the minority images are spread over the epoch, not bunched.
    assert epochs[0][0] != epochs[1][0]
    # (A random mix: the exact count per half varies with TF's seed state, so only "every class in
    # both halves of both epochs" is asserted; bunching would put a class in one half only.)
    for labels, _ in epochs:
        for half in (labels[:18], labels[18:]):
            assert set(half) == set(COUNTS), Counter(half)
    # Seeded: a fresh pipeline with the same seed replays the same epochs; another seed does not.
    again = build_dataset(root, items, image_size=SIZE_PX, batch_size=5, training=True, seed=1, cache="memory",
                          oversample=True)
    assert [_epoch(again)[0] for _ in range(2)] == [e[0] for e in epochs]
    other = build_dataset(root, items, image_size=SIZE_PX, batch_size=5, training=True, seed=2, cache="memory",
                          oversample=True)
    assert _epoch(other)[0] != epochs[0][0]


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_oversampling_resamples_after_the_cache(imbalanced, tmp_path, cache):
    """After epoch 1 the files can vanish: later epochs (still rebalanced) come from the cache."""
    from edgecls.data import build_dataset

    src, items = imbalanced
    root = tmp_path / "data"
    shutil.copytree(src, root)
    ds = build_dataset(root, items, image_size=SIZE_PX, batch_size=4, training=True, seed=0, cache=cache,
                       cache_dir=tmp_path / "cache", oversample=True)
    first, _ = _epoch(ds)
    shutil.rmtree(root)
    root.mkdir()  # the pipeline checks the folder exists only when it is built
    second, seen = _epoch(ds)
    assert Counter(first) == Counter(second) == {0: 12, 1: 12, 2: 12}
    assert _draws_per_image(seen) == {0: {1}, 1: {4}, 2: {2}}
    if cache == "disk":  # one cache file per class, each complete (an .index is written at the end)
        assert len(list((tmp_path / "cache").glob("*.index"))) == len(COUNTS)


def test_oversampling_is_for_training_only(imbalanced):
    from edgecls.data import build_dataset

    root, items = imbalanced
    with pytest.raises(EdgeclsError, match="oversampling is for the training split only"):
        build_dataset(root, items, image_size=SIZE_PX, batch_size=4, training=False, oversample=True)


@pytest.mark.parametrize(
    "saved, expected",
    [({"balance": "weights", "class_weights": "auto"}, "weights"), ({"balance": "weights", "class_weights": "none"}, "none"),
     ({"balance": "oversample", "class_weights": "none"}, "oversample"), ({"balance": "none"}, "none"), ({}, "weights")],
)
def test_a_run_saved_with_the_older_class_weights_switch_reads_as_its_balance(saved, expected):
    cfg = TrainConfig.from_dict({"data": "d", "out": "o", **saved})
    assert cfg.balance == expected and not hasattr(cfg, "class_weights")


@pytest.mark.parametrize(
    "counts, balance, used, weighted",
    [([8, 2], "weights", "weights", True), ([5, 4], "weights", "none", False),
     ([8, 2], "oversample", "oversample", False), ([8, 2], "none", "none", False)],
)
def test_the_run_records_which_remedy_was_used(counts, balance, used, weighted):
    from edgecls.data import balance_record, class_weights

    items = [(f"{c}/{i}.jpg", c) for c, n in enumerate(counts) for i in range(n)]
    w = class_weights([c for _, c in items], 2) if balance == "weights" else None
    rec = balance_record(balance, w, items)
    assert (rec["requested"], rec["used"], rec["train_counts"]) == (balance, used, counts)
    assert bool(w) == weighted
    assert rec.get("images_per_epoch") == (2 * max(counts) if used == "oversample" else None)


def test_check_rejects_an_unknown_balance():
    from edgecls.train.checks import check_train_config

    with pytest.raises(EdgeclsError, match="--balance must be one of weights, oversample, none, got 'smote'"):
        check_train_config(TrainConfig(data="d", out="o", weights="none", balance="smote"))


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["train", "{d}", "-o", "{t}/run", "--balance", "smote"], 2, "Invalid value for '--balance'"),
        (["train", "{d}", "-o", "{t}/run", "--labels-csv", "{t}/nope.csv", "--weights", "none"], 1,
         "Error: labels CSV not found: {t}/nope.csv"),
        pytest.param(["train", "{d}", "-o", "{t}/run", "--labels-csv", "{t}/bad.csv", "--weights", "none",
                      "--size", "32", "--alpha", "0.35"], 1,
                     "Error: class 'fox' has too few images: 1 usable row(s) in {t}/bad.csv",
                     marks=pytest.mark.slow),  # the scan runs after TensorFlow loads
        (["parity", "{t}/run", "{t}/m.tflite", "--labels-csv", "{t}/bad.csv"], 1,
         "Error: --labels-csv needs --data DIR (the folder its paths are relative to)"),
        (["data", "check", "{d}", "--labels-csv", "{t}/nope.csv", "--no-decode"], 1,
         "Error: labels CSV not found: {t}/nope.csv"),
    ],
)
def test_cli_table(imbalanced, tmp_path, args, code, message):
    root, items = imbalanced
    used = {rel for rel, _ in items}
    unused = next(p.relative_to(root).as_posix() for p in sorted(root.rglob("*.jpg"))
                  if p.relative_to(root).as_posix() not in used)
    rows = [f"{rel},{['cat', 'dog', 'eel'][lab]}" for rel, lab in items] + [f"{unused},fox"]
    (tmp_path / "bad.csv").write_text("\n".join(rows) + "\n")
    fmt = {"d": root, "t": tmp_path}
    result = CliRunner().invoke(cli, [a.format(**fmt) for a in args])
    assert result.exit_code == code, result.output
    assert message.format(**fmt) in result.output
    if code == 1:
        assert "Traceback" not in result.output and result.output.count("Error:") == 1
        assert not (tmp_path / "run").exists()  # a data error leaves no run folder behind
