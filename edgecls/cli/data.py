"""``edgecls data check`` and ``edgecls data synth``: look at an image folder, or make one.

TensorFlow is imported inside ``check`` only (it decodes with the pipeline's own decoder).
"""

from __future__ import annotations

from pathlib import Path

import click

from edgecls.core.config import TrainConfig, field_help
from edgecls.core.errors import EdgeclsError

MAX_SYNTH_CLASSES = 10  # == len(edgecls.data.synth.FAMILIES); kept here so --help needs no numpy/PIL import


def register(group: click.Group) -> None:
    """Add this area's commands to the edgecls group."""
    group.add_command(data)


@click.group()
def data() -> None:
    """Check an image folder, or write a synthetic one."""


@data.command()
@click.argument("data_dir", metavar="DATA", type=click.Path(path_type=Path))
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the report here.")
@click.option("--no-decode", is_flag=True, help="Only check names, sizes and file signatures (fast, no TensorFlow).")
@click.option("--labels-csv", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
              help="Labels from this CSV (path,label[,split] rows; paths relative to DATA or to FILE).")
@click.option("--negatives", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help=field_help(TrainConfig, "negatives"))
def check(data_dir: Path, json_path: Path | None, no_decode: bool, labels_csv: Path | None,
          negatives: Path | None) -> None:
    """Decode every image in DATA once; show per-class counts and every file that will be skipped.

    DATA is DATA/<class>/* (edgecls splits it) or DATA/train|val[|test]/<class>/* (used as given),
    or, with --labels-csv FILE, a folder of images labelled by FILE (every unusable row is listed).
    """
    import os

    # The report says why each file failed; TF's C++ decoder errors on stderr would only repeat it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from edgecls.core.io import atomic_write_json, ensure_writable
    from edgecls.data import (check_split, class_weights, inspect_dataset, inspect_labels_csv, make_split,
                              split_warnings, validate_scan)
    from edgecls.data.labels_csv import validate_labels_csv

    if json_path is not None:
        ensure_writable(json_path, "--json")

    if labels_csv is not None:
        report = inspect_labels_csv(data_dir, labels_csv, decode=not no_decode)
    else:
        report = inspect_dataset(data_dir, decode=not no_decode)
    click.echo(_format_report(report))
    if json_path is not None:
        atomic_write_json(json_path, report.to_dict())  # checked writable before the scan, above
        click.echo(f"Report written to {json_path}")
    # After printing, so the user sees which skipped files (or rows) emptied a class.
    (validate_labels_csv if labels_csv is not None else validate_scan)(report)
    # What `edgecls train` will warn about, said before anyone waits for TensorFlow to train.
    defaults = TrainConfig(data=str(data_dir))
    split = make_split(report, val_fraction=defaults.val_fraction, test_fraction=defaults.test_fraction,
                       seed=defaults.seed)
    check_split(split, str(data_dir))  # what train will refuse, said now
    for warning in split_warnings(split, list(report.classes)):
        click.echo(f"Warning: with train's default split, {warning}", err=True)
    first = "train" if report.layout == "splits" else "all"
    labels = [lab for _, lab in report.files[first]]
    weights = class_weights(labels, len(report.classes))
    note = (" Classes are imbalanced: training will use balanced class weights (or --balance oversample)."
            if weights else "")
    source = f", labels from {report.labels_csv}" if report.labels_csv else ""
    if negatives is not None:
        from edgecls.data.negatives import scan_negatives

        kept, skipped = scan_negatives(negatives, report, decode=not no_decode)
        click.echo(f"negatives: {len(kept)} usable photos in {negatives} (none of the classes; trained as the class "
                   f"'unknown'); skipped {len(skipped)}")
        for path, reason in skipped:
            click.echo(f"  {path}: {reason}")
    click.echo(f"OK: {report.n_usable} usable images in {len(report.classes)} classes "
               f"({report.layout} layout{source}).{note}")


def _format_report(report) -> str:
    counts = report.counts()
    splits = list(counts)
    width = max([5] + [len(c) for c in report.classes])
    head = "class".ljust(width) + "".join(f"{('images' if s == 'all' else s):>8}" for s in splits)
    source = f", labels from {report.labels_csv}" if report.labels_csv else ""
    lines = [f"{report.root} ({report.layout} layout{source}, {len(report.classes)} classes)", head]
    for c in report.classes:
        lines.append(c.ljust(width) + "".join(f"{counts[s][c]:>8}" for s in splits))
    lines.append("total".ljust(width) + "".join(f"{sum(counts[s].values()):>8}" for s in splits))
    if report.layout == "splits" and "test" not in splits:
        what = "no test rows" if report.labels_csv else "no test/ folder"
        lines.append(f"({what}: the val split doubles as the test split)")
    if report.skipped and report.labels_csv:
        lines.append(f"Skipped {len(report.skipped)} row(s) of {report.labels_csv}:")
        for path, reason in report.skipped:  # reason is "line N: why": show the line number first
            line, why = reason.split(": ", 1)
            lines.append(f"  {line}: {path}: {why}")
    elif report.skipped:
        lines.append(f"Skipped {len(report.skipped)} file(s):")
        lines += [f"  {path}: {reason}" for path, reason in report.skipped]
    else:
        lines.append("Skipped 0 files.")
    if report.oriented:
        lines.append(f"{len(report.oriented)} photo(s) carry an EXIF orientation: turned upright for training, "
                     "as on the device (listed in --json).")
    return "\n".join(lines)


@data.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--classes", type=click.IntRange(2, MAX_SYNTH_CLASSES), default=4, show_default=True,
              help="Number of classes (shape/texture families).")
@click.option("--per-class", type=click.IntRange(1, 100_000), default=50, show_default=True, help="Images per class.")
@click.option("--size", type=click.IntRange(16, 4096), default=128, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Same seed, same files.")
@click.option("--layout", type=click.Choice(["classes", "splits"]), default="classes", show_default=True,
              help="OUT/<class>/ or OUT/train|val|test/<class>/ (70/15/15).")
@click.option("--force", is_flag=True, help="Write into a non-empty OUT (same-named files are overwritten).")
def synth(out: Path, classes: int, per_class: int, size: int, seed: int, layout: str, force: bool) -> None:
    """Write a synthetic JPEG image set to OUT (shapes and textures on cluttered backgrounds)."""
    from edgecls.data.synth import check_out_dir, write_synthetic_dataset

    check_out_dir(out, force)
    s = write_synthetic_dataset(out, classes=classes, per_class=per_class, size=size, seed=seed, layout=layout)
    click.echo(
        f"Wrote {s['files']} images ({classes} classes x {per_class}, {size}px, seed {seed}, {layout} layout) "
        f"to {out} in {s['seconds']:.1f} s: {', '.join(s['classes'])}"
    )


_ = EdgeclsError  # raised by the library; the group turns it into one Error: line
