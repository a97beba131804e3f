"""Shared fixtures: small real data and models made in tmp dirs, never downloaded."""

from __future__ import annotations

import os

# Must be set before anything imports TensorFlow (tfmot needs Keras 2).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# -- device area: tiny real .tflite models (float32 and full int8), built once per session ------
import pytest  # noqa: E402


# -- cold builds in the background (tests/prebuild.py): downloads overlap the CPU-bound tests ---
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

if str(Path(__file__).parent) not in sys.path:  # tests' helper modules; --import-mode=importlib does not add it
    sys.path.insert(0, str(Path(__file__).parent))


def pytest_configure(config):
    import ci_skips

    config.pluginmanager.register(ci_skips, "edgecls-ci-skips")
    config.addinivalue_line("markers", "prebuild(name): needs tests/prebuild.py's build NAME (started in the "
                                       "background when the session starts)")
    import xdist_groups

    if xdist_groups.wanted(config):
        xdist_groups.make_dir(config)


def pytest_unconfigure(config):
    import xdist_groups

    xdist_groups.remove_dir(config)


@pytest.hookimpl(optionalhook=True)  # xdist controller: tell each worker where to publish its groups
def pytest_configure_node(node):
    import xdist_groups

    xdist_groups.pass_to_worker(node)


@pytest.hookimpl(optionalhook=True)  # xdist controller; xdist's own implementation is trylast
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` with the groups read from the workers' files (tests/xdist_groups.py)."""
    import xdist_groups

    if getattr(config, "_edgecls_groups_dir", None):
        return xdist_groups.make_scheduler(config, log)
    return None


def _xdist_worker(config) -> str | None:
    """This process's pytest-xdist worker id ("gw0", ...), or None when not a worker."""
    return getattr(config, "workerinput", {}).get("workerid")


def pytest_collection_finish(session):
    import prebuild

    if session.config.option.collectonly or not prebuild.enabled():
        return
    # Under `pytest -n N` every worker collects every test: the first one alone starts the
    # builds (a test in another worker waits on the same lock), reporting through the controller.
    if _xdist_worker(session.config) not in (None, "gw0"):
        return
    names = prebuild.wanted([m.args[0] for item in session.items for m in item.iter_markers("prebuild")])
    if not names:
        return
    builder = prebuild.Prebuilder(names)
    session.config._edgecls_prebuilder = builder
    builder.start()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"edgecls: building {', '.join(sorted(names))} in the background "
                            f"(logs: {builder.logs}/)")


def pytest_sessionfinish(session):
    builder = getattr(session.config, "_edgecls_prebuilder", None)
    if builder is not None:
        builder.stop()  # no builder outlives the session
        if _xdist_worker(session.config) is not None:  # the controller prints it (pytest_testnodedown)
            session.config.workeroutput["edgecls_prebuild"] = builder.summary()


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest without xdist has no such hook
def pytest_testnodedown(node, error):
    """xdist controller: keep the background builds' summary a worker sent."""
    lines = getattr(node, "workeroutput", {}).get("edgecls_prebuild")
    if lines:
        node.config._edgecls_prebuild_lines = lines


def pytest_terminal_summary(terminalreporter, config):
    terminalreporter.write_line(f"skipped tests: {len(terminalreporter.stats.get('skipped', []))}")
    builder = getattr(config, "_edgecls_prebuilder", None)
    lines = builder.summary() if builder is not None else getattr(config, "_edgecls_prebuild_lines", [])
    for line in lines:
        terminalreporter.write_line(line)


# -- pytest-xdist (`pytest -n 2 --dist loadgroup`, optional): a shared fixture stays in one worker --
SHARED_RUN_FIXTURES = {"tiny_run", "exported_run"}
"""Session fixtures that train/prune/export (~2 min together): built once, in one worker."""


# tryfirst: xdist reads the xdist_group marks in its own collection hook; ours must have set them by then.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup``, put every test that needs a shared trained run, or a module-scoped
    fixture of its file, into one xdist group, so no worker builds such a fixture a second time.
    Keys that meet in one test (a module fixture built on ``exported_run``) merge into one group."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    keyed = []
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        keys = ["shared-run"] if SHARED_RUN_FIXTURES & set(info.names_closure) else []
        if any(d.scope in ("module", "class", "package") for defs in info.name2fixturedefs.values() for d in defs):
            keys.append(item.nodeid.split("::")[0])
        for key in keys[1:]:
            parent[find(key)] = find(keys[0])
        if keys:
            keyed.append((item, keys[0]))
    for item, key in keyed:
        item.add_marker(pytest.mark.xdist_group(find(key)))
    # xdist's own way (an "@group" suffix on the node id) is lost under pytest 9.2: publish the
    # groups to the controller's scheduler instead (tests/xdist_groups.py).
    import xdist_groups

    xdist_groups.write(config, {item.nodeid: find(key) for item, key in keyed})


@pytest.fixture(scope="session")
def tiny_tflite(tmp_path_factory):
    """A 32x32 3-class Keras model exported to float32 and full-int8 (uint8 io) .tflite files.

    Returns a dict: ``float32``/``int8`` paths, ``images`` (uint8 [8,32,32,3]) and ``keras_probs``
    (the Keras model's softmax on those images), so device tests compare against the real model.
    """
    import numpy as np

    from edgecls.core.keras import keras

    root = tmp_path_factory.mktemp("tiny_tflite")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    # Images with distinct colour casts so the three classes get distinct, confident-ish scores.
    images = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    images[::2, :, :, 0] //= 4
    keras_probs = model.predict(images.astype(np.float32), verbose=0)

    out = {"images": images, "keras_probs": keras_probs, "dir": root}
    # Converted by the project's export path (the same converter `edgecls export` uses).
    from edgecls.optimize.convert import convert_model

    for mode in ("float32", "int8"):
        (root / mode).mkdir()
        out[mode] = root / mode / f"model_{mode}.tflite"
        representative = rng.integers(0, 256, size=(32, 32, 32, 3)).astype(np.float32) if mode == "int8" else None
        out[mode].write_bytes(convert_model(model, mode, representative=representative))
    (root / "float32" / "labels.txt").write_text("cat\ndog\nbird\n")
    return out


# -- data area: a small synthetic class-folder set and a set of awkward files -------------------
@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """DATA/<class>/*.jpg: 3 classes (circles, stripes, triangles) x 12 images, 64 px, seed 0."""
    from edgecls.data.synth import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth_data") / "data"
    write_synthetic_dataset(root, classes=3, per_class=12, size=64, seed=0)
    return root


def make_messy_files(folder) -> dict[str, str | None]:
    """Write one file of each awkward kind into ``folder``; returns name -> expected skip-reason
    substring (None for files the pipeline must accept)."""
    import io
    from pathlib import Path

    import numpy as np
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Smooth colour gradients: JPEG keeps them, so decoders can be compared pixel by pixel.
    yy, xx = np.mgrid[0:30, 0:40]
    rgb = np.stack([xx * 6, yy * 8, 255 - xx * 3 - yy * 2], -1).clip(0, 255).astype(np.uint8)
    im = Image.fromarray(rgb)
    im.convert("CMYK").save(folder / "cmyk.jpg")
    im.convert("L").save(folder / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full((30, 40), 99, np.uint8)])).save(folder / "rgba.png")
    im.save(folder / "anim.gif", save_all=True, append_images=[Image.fromarray(255 - rgb)], duration=100, loop=0)
    im.save(folder / "plain.bmp")
    im.convert("P").save(folder / "palette.bmp")
    im.save(folder / "ünï code name.jpg", quality=90)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    (folder / "._x.jpg").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)  # macOS AppleDouble
    im.save(folder / "pic.tiff")
    return {
        "cmyk.jpg": None,
        "gray.png": None,
        "rgba.png": None,
        "anim.gif": None,
        "plain.bmp": None,
        "ünï code name.jpg": None,
        "palette.bmp": "unsupported by the TF decoder",
        "truncated.jpg": "corrupt or truncated",
        "zero.jpg": "empty file (0 bytes)",
        "notes.txt": "unsupported format (.txt)",
        "._x.jpg": "hidden file",
        "pic.tiff": "unsupported format TIFF",
    }


@pytest.fixture(scope="session")
def messy_data(tmp_path_factory):
    """DATA/good/ (synthetic) + DATA/messy/ (make_messy_files); returns (root, expectations)."""
    import shutil

    from edgecls.data.synth import write_synthetic_dataset

    root = tmp_path_factory.mktemp("messy_data") / "data"
    src = tmp_path_factory.mktemp("messy_src")
    write_synthetic_dataset(src, classes=2, per_class=4, size=48, seed=1)
    shutil.copytree(src / "circles", root / "good")
    expect = make_messy_files(root / "messy")
    return root, expect


@pytest.fixture(scope="session")
def device_video(tmp_path_factory):
    """A 36-frame 640x480 mp4v video: a gradient with a moving square (easy for the codec)."""
    import cv2
    import numpy as np

    path = tmp_path_factory.mktemp("device_video") / "clip.mp4"
    w, h = 640, 480
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (w, h))
    base = np.zeros((h, w, 3), np.uint8)
    base[:, :, 1] = np.linspace(60, 200, w, dtype=np.uint8)[None, :]
    base[:, :, 2] = np.linspace(200, 60, h, dtype=np.uint8)[:, None]
    for i in range(36):
        frame = base.copy()
        x = 40 + i * 12
        frame[200:300, x:x + 100] = (255, 255, 255)
        writer.write(frame)
    writer.release()
    return path


# -- train area: one tiny real training run, shared by train/export/parity tests ---------------
TINY_RUN_SIZE_PX = 64
TINY_RUN_CLASSES = 3
TINY_RUN_PER_CLASS = 30


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished ``edgecls train`` run folder (returns its Path): MobileNetV2 alpha 0.35, 64 px,
    random init (``weights="none"``), 3 synthetic classes x 30 images, 4 head epochs + 1
    fine-tune epoch (with `exported_run`: 133 s on a quiet 2-core machine, most of it graph
    tracing, see docs/testing.md). Random features do not generalise, so expect
    chance-level accuracy; the high learning rate and no augmentation make the head fit the
    training images, so predicted classes still differ between images (useful for parity).
    Treat it as read-only: write new files (pruned models, exports) where your stage puts them.
    """
    from edgecls.core.config import TrainConfig
    from edgecls.data.synth import write_synthetic_dataset
    from edgecls.train.fit import train

    root = tmp_path_factory.mktemp("tiny_run")
    write_synthetic_dataset(root / "data", classes=TINY_RUN_CLASSES, per_class=TINY_RUN_PER_CLASS,
                            size=TINY_RUN_SIZE_PX, seed=0)
    cfg = TrainConfig(
        data=str(root / "data"), out=str(root / "run"), backbone="mobilenet_v2", alpha=0.35,
        size=TINY_RUN_SIZE_PX, weights="none", epochs=4, fine_tune_epochs=1, batch_size=16,
        learning_rate=3e-2, augment=False, cache="memory", seed=0,
    )
    return train(cfg, verbose=0).path


# -- export area: a private, pruned and exported copy of tiny_run -------------------------------
@pytest.fixture(scope="session")
def exported_run(tiny_run, tmp_path_factory):
    """A copy of ``tiny_run`` pruned to 50% (1 epoch) with int8 and pruned-int8 exports (parity
    run with gates that cannot fail: the tiny model's accuracy is near chance and its top two
    scores nearly tie; tests assert on the figures instead). Read-only for tests.
    """
    import shutil
    from types import SimpleNamespace

    from edgecls.core.config import ExportConfig, PruneConfig
    from edgecls.optimize.export import export_run
    from edgecls.optimize.prune import prune_run

    run = tmp_path_factory.mktemp("exported_run") / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints", "logs", "cache", "plots"))
    pruning = prune_run(PruneConfig(run=str(run), sparsity=0.5, epochs=1, batch_size=16))
    lenient = dict(max_drop=100.0, min_clear_agreement=0.0)  # calibrates on every training image (< 300)
    int8 = export_run(ExportConfig(run=str(run), mode="int8", **lenient))
    pruned_int8 = export_run(ExportConfig(run=str(run), mode="int8", pruned=True, **lenient))
    return SimpleNamespace(path=run, pruning=pruning, int8=int8, pruned_int8=pruned_int8)


# -- device area: a model with a clear colour rule, and videos that switch colour ----
COLOUR_LABELS = ("red", "blue")
COLOURS_RGB = {"red": (230, 20, 20), "blue": (20, 20, 230), "reddish": (133, 120, 122), "bluish": (122, 120, 133),
               "grey": (128, 128, 128)}
"""Frame colours: 'red'/'blue' are clear (score ~1.0); 'reddish'/'bluish' are uncertain (~0.6)."""


@pytest.fixture(scope="session")
def colour_model(tmp_path_factory):
    """A float32 .tflite (labels.txt beside it): 32x32 input, softmax(20 * (mean R - mean B) / 255, reverse).

    Hand-set weights, converted by the project's own converter: red frames score 'red' ~1.0,
    blue ones 'blue', grey ones 0.5/0.5, so tests know exactly what the loop must report.
    """
    import numpy as np

    from edgecls.core.keras import keras
    from edgecls.optimize.convert import convert_model

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(2, activation="softmax")
    outputs = dense(x)
    model = keras.Model(inputs, outputs)
    dense.set_weights([np.array([[10.0, -10.0], [0.0, 0.0], [-10.0, 10.0]], np.float32), np.zeros(2, np.float32)])
    root = tmp_path_factory.mktemp("colour_model")
    path = root / "colour.tflite"
    path.write_bytes(convert_model(model, "float32"))
    (root / "labels.txt").write_text("\n".join(COLOUR_LABELS) + "\n")
    return path


def write_colour_video(path, segments, *, fps: float = 30.0, size=(160, 120)):
    """An mp4v video of solid-colour segments [(colour name, frames), ...] with a little texture."""
    import cv2
    import numpy as np

    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    n = 0
    for name, frames in segments:
        r, g, b = COLOURS_RGB[name]
        for _ in range(frames):
            f = np.empty((h, w, 3), np.uint8)
            f[:] = (b, g, r)
            cv2.putText(f, str(n), (5, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (g, g, g), 1)
            writer.write(f)
            n += 1
    writer.release()
    return path
