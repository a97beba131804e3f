"""The sharp real-photo sets of the training benchmark: where each comes from, its licence, its classes.

Each ``PhotoSource`` names a public GitHub repository that carries its photos as plain image files,
the commit they were checked at, their licence, and which of its folders make which class;
``photo_build.build`` writes one into a folder and ``tools/photo_sets.py`` has a subcommand per set.
The table of sets and how to rebuild each is in ``tools/photo_sets.py``'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PhotoSource:
    """One set: a repository's class folders and what is known about them."""

    name: str
    """Set name: the ``photo_sets.py`` subcommand and ``bench_train.py --set`` value."""
    kind: str
    """What the photos show, e.g. "objects on a plain background"."""
    repo: str
    """GitHub ``owner/name`` whose snapshot holds the photos."""
    commit: str
    """The commit the photos were checked at; ``build`` reads this one unless told otherwise."""
    licence: str
    """The photos' licence and where it is stated."""
    classes: dict[str, tuple[str, ...]]
    """Output class -> folders in the repository (each read recursively)."""
    per_class: int
    """At most this many photos per class."""
    min_short_px: int = 0
    """Photos with a shorter short side are skipped."""
    caveats: str = ""
    """Known problems: label noise, near-duplicates, ..."""
    resolution: str = ""
    """As measured on the built set (``photo_sets.py inspect``)."""


def _tree(prefix: str, names: dict[str, str]) -> dict[str, tuple[str, ...]]:
    return {cls: (f"{prefix}{folder}",) for cls, folder in names.items()}


SOURCES: dict[str, PhotoSource] = {}


def register(source: PhotoSource) -> PhotoSource:
    """Add ``source`` to ``SOURCES`` under its name (names are unique)."""
    if source.name in SOURCES:
        raise ValueError(f"photo set {source.name!r} is registered twice")
    SOURCES[source.name] = source
    return source


def get(name: str) -> PhotoSource:
    """The registered set called ``name``; SystemExit listing the valid names otherwise."""
    if name not in SOURCES:
        raise SystemExit(f"no photo set {name!r}; the sets are: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]


register(PhotoSource(
    name="trashnet",
    kind="objects on a plain background",
    repo="congduytran12/Trash-Classification-",
    commit="00212f2c18dcdb9045c74481eaae5baaf72537df",
    licence="MIT (garythung/trashnet LICENSE, (c) 2017 Gary Thung); this repository carries trashnet's "
            "data/dataset-resized unpacked, with the same counts per class as trashnet's README",
    classes=_tree("dataset-resized/", {c: c for c in ("cardboard", "glass", "metal", "paper", "plastic")}),
    per_class=600,
    min_short_px=160,
    caveats="one object per photo on white posterboard or cardboard, iPhone photos resized by the authors to "
            "512 x 384; 6 byte-identical photos filed under two classes are dropped; the sixth class 'trash' "
            "(137 photos) is left out as too small",
    resolution="512 x 384 (all)",
))

register(PhotoSource(
    name="clothing",
    kind="objects on a plain background",
    repo="alexeygrigorev/clothing-dataset-small",
    commit="11961516512414bf9f6c150a832cfd21b54a6b54",
    licence="CC0 1.0 (the repository's LICENSE); a subset of alexeygrigorev/clothing-dataset",
    classes={c: tuple(f"{split}/{c}" for split in ("train", "validation", "test"))
             for c in ("dress", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "t-shirt")},
    per_class=400,
    min_short_px=160,
    caveats="phone photos of single garments, mostly on a floor, bed or plain sheet; some shirt/longsleeve/"
            "t-shirt/outwear labels are a matter of taste; 'hat' (149) and 'skirt' (136) left out as too small; "
            "a few 400 x 700+ photos are scaled down to 640 px",
    resolution="533 x 400 median",
))

register(PhotoSource(
    name="grocery",
    kind="objects (phone photos in shops)",
    repo="marcusklasson/GroceryStoreDataset",
    commit="fc80ba90f803d79d0383df52c5a4ac5de99ff6fc",
    licence="MIT (the repository's LICENSE, (c) 2019 Marcus Klasson)",
    classes={c.lower(): tuple(f"dataset/{split}/{group}/{c}" for split in ("train", "val", "test"))
             for group, names in (("Fruit", ("Apple", "Melon", "Pear")),
                                  ("Packages", ("Juice", "Milk", "Yoghurt")),
                                  ("Vegetables", ("Pepper", "Tomato")))
             for c in names},
    per_class=400,
    min_short_px=160,
    caveats="348 x 348 smartphone photos of piles and shelves; coarse classes (each merges varieties or "
            "brands); photos come in bursts of the same pile, so near-duplicates land in both training and "
            "held-out draws and flatter every recipe alike",
    resolution="348 x 348 (all)",
))

register(PhotoSource(
    name="flowers",
    kind="close-ups",
    repo="atiaisaac/flowers_classification",
    commit="087014c38ad5e456c63e2286dd83c0ff7b921489",
    licence="CC-BY 2.0, per photo: TensorFlow's flower_photos (tf_flowers); every file here is named in its "
            "LICENSE.txt with photographer and Flickr page (a copy: dalifreire/cnn_hello_world "
            "3d061c00e75448ac0beb39778864a929973dc8fb datasets/flower_photos/LICENSE.txt; pass it as "
            "--attributions to write OUT/ATTRIBUTION.txt)",
    classes=_tree("flowers/", {"daisy": "daisy", "dandelion": "dandelion", "rose": "roses",
                               "sunflower": "sunflowers", "tulip": "tulips"}),
    per_class=600,
    min_short_px=160,
    caveats="Flickr photos, 600 of tf_flowers' 633-898 per class of which 65 under 160 px are skipped; some "
            "are wide garden shots, a few show another flower or carry a photographer's watermark",
    resolution="320 x 240 median (short side 160-442)",
))

register(PhotoSource(
    name="scenes",
    kind="outdoor scenes",
    repo="afroozsheikh/Intel-Image-Classifier",
    commit="5b571f44a7fdd66301f05b6921c07ee71b9e324c",
    licence="no licence file: Intel's natural-scene photos published for an Analytics Vidhya practice "
            "challenge and mirrored on Kaggle ('intel-image-classification'); used here to benchmark only, "
            "not redistributed",
    classes={c: (f"train/{c}", f"test/{c}") for c in ("buildings", "forest", "glacier", "mountain", "sea", "street")},
    per_class=600,
    min_short_px=150,
    caveats="150 x 150 px as published (below the benchmark's 160, so the loader upscales by 7 %); "
            "glacier/mountain and buildings/street overlap and some labels are wrong (a beach under glacier, "
            "an aquarium under sea); read at the pinned commit, which added Intel's photos: the repository's "
            "later commits shrank them to 100 px",
    resolution="150 x 150 (all)",
))
