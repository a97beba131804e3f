"""Validation of a :class:`~edgecls.core.config.TrainConfig`, without importing TensorFlow.

The CLI and :func:`edgecls.train.train` both call :func:`check_train_config` first, so a bad
option fails in a fraction of a second with one clear message instead of after TF loads.
"""

from __future__ import annotations

from edgecls.train.backbones import check_backbone_options
from edgecls.core.config import BALANCE_MODES, CACHE_MODES, HEAD_CACHE_MODES, TrainConfig
from edgecls.core.errors import EdgeclsError

CLASS_WEIGHT_MODES = ("auto", "none")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
PRECISIONS = ("auto", "on", "off")
MAX_HEAD_CACHE_VIEWS = 64  # each view is one backbone pass over the training set; beyond this the cache costs more than it saves
MAX_SIZE_PX = 1024  # beyond this a CPU/GPU run of these backbones is out of memory long before it helps


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise EdgeclsError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise EdgeclsError(f"{name} must be > 0, got {value}")


def check_train_config(cfg: TrainConfig) -> None:
    """Raise :class:`EdgeclsError` naming the first bad option."""
    if not cfg.data:
        raise EdgeclsError("no image folder given (DATA/<class>/*.jpg)")
    if not cfg.out:
        raise EdgeclsError("no run folder given (--out RUN)")
    if isinstance(cfg.size, int) and cfg.size > MAX_SIZE_PX:
        raise EdgeclsError(f"size must be <= {MAX_SIZE_PX} pixels, got {cfg.size} (the backbones use 96-600)")
    check_backbone_options(
        cfg.backbone, size=cfg.size, alpha=cfg.alpha, minimalistic=cfg.minimalistic, weights=cfg.weights
    )
    if cfg.epochs < 1:
        raise EdgeclsError(f"epochs must be >= 1 (the new head needs training), got {cfg.epochs}")
    if cfg.fine_tune_epochs < 0:
        raise EdgeclsError(f"fine_tune_epochs must be >= 0, got {cfg.fine_tune_epochs}")
    if not 0.0 < cfg.fine_tune_fraction <= 1.0:
        raise EdgeclsError(f"fine_tune_fraction must be in (0, 1], got {cfg.fine_tune_fraction}")
    if cfg.batch_size < 1:
        raise EdgeclsError(f"batch size must be >= 1, got {cfg.batch_size}")
    _positive("learning rate", cfg.learning_rate)
    _positive("fine-tune learning rate", cfg.fine_tune_learning_rate)
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise EdgeclsError(f"label smoothing must be in [0, 1), got {cfg.label_smoothing}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise EdgeclsError(f"dropout must be in [0, 1), got {cfg.dropout}")
    if cfg.early_stopping_patience < 1:
        raise EdgeclsError(f"early stopping patience must be >= 1, got {cfg.early_stopping_patience}")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise EdgeclsError(f"val fraction must be in (0, 1), got {cfg.val_fraction}")
    if not 0.0 <= cfg.test_fraction < 1.0:
        raise EdgeclsError(f"test fraction must be in [0, 1), got {cfg.test_fraction}")
    if cfg.val_fraction + cfg.test_fraction >= 0.9:
        raise EdgeclsError(
            f"val fraction + test fraction = {cfg.val_fraction + cfg.test_fraction:g} leaves too little to train on; "
            "keep their sum under 0.9"
        )
    _choice("cache", cfg.cache, CACHE_MODES)
    if cfg.cache_budget_mb < 0:
        raise EdgeclsError(f"cache budget must be >= 0 MB, got {cfg.cache_budget_mb}")
    _choice("class weights", cfg.class_weights, CLASS_WEIGHT_MODES)
    _choice("balance", cfg.balance, BALANCE_MODES)
    _choice("mixed precision", cfg.mixed_precision, PRECISIONS)
    _choice("strategy", cfg.strategy, STRATEGIES)
    if cfg.prune is not None and not 0.0 < cfg.prune < 1.0:
        raise EdgeclsError(f"prune sparsity must be in (0, 1), e.g. 0.5; got {cfg.prune}")
    if cfg.prune_epochs < 1:
        raise EdgeclsError(f"prune epochs must be >= 1, got {cfg.prune_epochs}")
    _choice("head cache", cfg.head_cache, HEAD_CACHE_MODES)
    if not 1 <= cfg.head_cache_views <= MAX_HEAD_CACHE_VIEWS:
        raise EdgeclsError(f"head cache views must be between 1 and {MAX_HEAD_CACHE_VIEWS}, got {cfg.head_cache_views}")


def check_run_dir(out: str, *, force: bool = False, resume: bool = False) -> None:
    """Refuse to overwrite a run without ``force``; refuse to delete a folder that is not a run.

    Runs before TensorFlow loads. ``resume`` needs an existing run with a checkpoint.
    """
    from pathlib import Path

    path = Path(out)
    if resume:
        if not (path / "config.json").is_file():
            raise EdgeclsError(f"cannot resume: {path} is not an edgecls run (no config.json)")
        if not (path / "checkpoints" / "state.json").is_file():
            raise EdgeclsError(f"cannot resume: {path} has no checkpoint (it stopped before its first epoch); "
                               "start again with --force")
        import json

        try:
            state = json.loads((path / "checkpoints" / "state.json").read_text())
        except ValueError:
            raise EdgeclsError(f"cannot resume: {path / 'checkpoints' / 'state.json'} is not valid JSON; "
                               "start again with --force") from None
        if state.get("phase") == "done":
            raise EdgeclsError(f"run {path} is already complete; nothing to resume")
        if not (path / "checkpoints" / "last.weights.npz").is_file():
            raise EdgeclsError(f"cannot resume: {path / 'checkpoints' / 'last.weights.npz'} is missing, so the run "
                               "cannot continue where it stopped; start again with --force")
        return
    if not path.exists():
        return
    if not path.is_dir():
        raise EdgeclsError(f"{path} exists and is a file; choose another --out")
    if not any(p.name != ".edgecls.lock" for p in path.iterdir()):  # empty but for a writer's lock file
        return
    if not force:
        raise EdgeclsError(
            f"run folder {path} already exists; use --force to overwrite it or --resume to continue it"
        )
    if not (path / "config.json").is_file():
        raise EdgeclsError(
            f"{path} exists and is not an edgecls run; refusing to delete it even with --force (choose another --out)"
        )
