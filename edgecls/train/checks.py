"""Validation of a :class:`~edgecls.core.config.TrainConfig`, without importing TensorFlow.

The CLI and :func:`edgecls.train.train` both call :func:`check_train_config` first, so a bad
option fails in a fraction of a second with one clear message instead of after TF loads.
"""

from __future__ import annotations

from edgecls.train.backbones import BackboneChoice
from edgecls.core.config import TrainConfig
from edgecls.core.options import validate
from edgecls.core.errors import EdgeclsError


def check_train_config(cfg: TrainConfig) -> None:
    """Raise :class:`EdgeclsError` naming the first bad option.

    Each option's own bounds are checked when the config is made (:mod:`edgecls.core.options`);
    what is left here is what needs more than one option, or the backbone registry."""
    validate(cfg)  # a config changed after it was made
    if not cfg.data:
        raise EdgeclsError("no image folder given (DATA/<class>/*.jpg)")
    if not cfg.out:
        raise EdgeclsError("no run folder given (--out RUN)")
    BackboneChoice.of(cfg).check()
    if cfg.val_fraction + cfg.test_fraction >= 0.9:
        raise EdgeclsError(
            f"--val-fraction + --test-fraction = {cfg.val_fraction + cfg.test_fraction:g} leaves too little to train "
            "on; keep their sum under 0.9"
        )


def check_run_dir(out: str, *, force: bool = False, resume: bool = False, data: str = "") -> None:
    """Refuse to overwrite a run without ``force``; refuse to delete a folder that is not a run; refuse a
    run inside the image folder ``data`` (its files would become images of a class the next time).

    Runs before TensorFlow loads. ``resume`` needs an existing run with a checkpoint.
    """
    from pathlib import Path

    path = Path(out)
    if data:
        inside, top = path.resolve(), Path(data).resolve()
        if inside == top or top in inside.parents:
            raise EdgeclsError(f"--out {out} is inside the image folder {data}; put the run elsewhere")
    if resume:
        if not (path / "config.json").is_file():
            raise EdgeclsError(f"cannot resume: {path} is not an edgecls run (no config.json)")
        if not (path / "checkpoints" / "state.json").is_file():
            raise EdgeclsError(f"cannot resume: {path} has no checkpoint (it stopped before its first epoch); "
                               "start again with --force")
        from edgecls.train.state import PHASE_DONE, TrainState

        try:
            state = TrainState.read(path / "checkpoints")
        except ValueError:
            raise EdgeclsError(f"cannot resume: {path / 'checkpoints' / 'state.json'} is not valid JSON; "
                               "start again with --force") from None
        if state.phase == PHASE_DONE:
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
