"""Stage 1, the data: scan and validate an image folder, split it, feed it to TensorFlow.

``scan`` (the one acceptance rule), ``split`` (stratified, seeded, saved in the run),
``pipeline`` (tf.data), ``synth`` (a synthetic image set). The public names are re-exported
here, so ``from edgecls import data`` is the one import for the data contract. Importing
this package does not import TensorFlow.
"""

from edgecls.core.config import CACHE_MODES
from edgecls.data.labels_csv import inspect_labels_csv, scan_labels_csv
from edgecls.data.pipeline import build_dataset, load_images, oversampled_epoch_size, resolve_cache
from edgecls.data.scan import (
    SPLIT_NAMES,
    SUPPORTED,
    Item,
    ScanReport,
    decode_image_file,
    inspect_dataset,
    scan_dataset,
    validate_scan,
)
from edgecls.data.split import (
    IMBALANCE_RATIO,
    balance_record,
    check_split,
    class_weights,
    load_split,
    make_split,
    save_split,
    split_warnings,
    stratified_sample,
)

__all__ = [
    "SPLIT_NAMES", "SUPPORTED", "IMBALANCE_RATIO", "CACHE_MODES", "Item", "ScanReport",
    "scan_dataset", "inspect_dataset", "split_warnings", "validate_scan", "decode_image_file",
    "make_split", "check_split", "save_split", "load_split", "stratified_sample", "class_weights",
    "build_dataset", "load_images", "resolve_cache",
    "oversampled_epoch_size", "balance_record", "scan_labels_csv", "inspect_labels_csv",
]
