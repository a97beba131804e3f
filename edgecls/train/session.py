"""One training run in progress: the plan of phases, and each phase's model, data and fit.

A run trains in phases (:func:`plan_phases`): the new head on the frozen backbone, then the top of
the backbone unfrozen. Each phase supplies its model, its data and its steps:

- on *cached features* (the default, :mod:`edgecls.train.feature_cache`): the head phase trains
  the classifier's own head layers on the backbone's output for K augmented views of each image,
  the fine-tune phase the layers above the cut on the features at the cut;
- on the *images* (``--head-cache none``, or where the cache does not apply): the augmenting
  trainer (:func:`edgecls.train.models.make_trainer`) runs the whole classifier on every batch.

Every epoch writes a checkpoint (:class:`edgecls.train.checkpoint.Checkpointer`); a phase starts
from the best weights of the one before, and a resumed run continues where its state says.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from edgecls.core.config import TrainConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.rundir import RunDir
from edgecls.train.checkpoint import (
    BEST_WEIGHTS, LAST_WEIGHTS, Checkpointer, ResumableEarlyStopping, ResumeState, has_optimizer_state, load_optimizer,
    read_rng, restore, restore_rng, rng_states, save_checkpoint,
)
from edgecls.train.datasets import Datasets
from edgecls.train.models import compile_for, set_trainable
from edgecls.train.profile import Timings
from edgecls.train.state import PHASE_FINE_TUNE, PHASE_HEAD, TrainState

FINE_TUNE_SEED_OFFSET = 1  # the fine-tune phase's epoch draws on cached features (see _feature_inputs)


@dataclass(frozen=True)
class Phase:
    """One phase of training: its name in the state, its epochs, its learning rate, how much of the backbone
    trains (0: none, the head phase)."""

    name: str
    epochs: int
    learning_rate: float
    fraction: float


def plan_phases(cfg: TrainConfig) -> list[Phase]:
    """The phases a run with ``cfg`` trains, in order."""
    phases = [Phase(PHASE_HEAD, cfg.epochs, cfg.learning_rate, 0.0)]
    if cfg.fine_tune_epochs > 0:
        phases.append(Phase(PHASE_FINE_TUNE, cfg.fine_tune_epochs, cfg.fine_tune_learning_rate, cfg.fine_tune_fraction))
    return phases


@dataclass
class PhaseInputs:
    """What one phase fits: the model, its training data (with steps per epoch when it is one long stream)
    and its validation data."""

    model: Any
    train: Any
    val: Any
    steps: Optional[int] = None
    on_features: bool = False


@dataclass
class Session:
    """A run being trained: the options, where it writes, what it trains, and its state."""

    cfg: TrainConfig
    run: RunDir
    state: TrainState
    strategy: Any
    classifier: Any
    data: Datasets
    trainer: Callable[[], Any]
    """The model that trains on the images (augmentation + classifier), built on first use."""
    resume: bool = False
    verbose: int = 2
    class_weights: Optional[dict[int, float]] = None
    callbacks: Sequence[Any] = ()
    timings: Timings = field(default_factory=Timings)
    cache: Any = None
    """The feature cache, once this process has built or reloaded it."""
    cut: Any = None
    """Where the fine-tune phase trains from on cached features (:class:`edgecls.train.cut.Cut`), or None."""
    rng: Optional[dict[str, Any]] = None
    """The random layers' generator states after the last phase this process fitted (None: none yet)."""
    rng_restored: bool = False
    """Whether a resumed run has put its checkpoint's generator states back (once, before its first fit)."""

    @property
    def ckpt(self) -> Path:
        return self.run.checkpoints

    def run_phases(self) -> None:
        """Every phase of the plan, skipping what a resumed run already finished."""
        phases = plan_phases(self.cfg)
        order = [p.name for p in phases]
        current = order.index(self.state.phase)
        self.cut = self._fine_tune_cut()
        for i, phase in enumerate(phases):
            if i < current:
                continue  # finished before the interruption
            start = self.state.phase_epochs_done if i == current else 0
            if start < phase.epochs:
                self._train_phase(phase, start, mid_phase=self.resume and i == current and start > 0)
            self._end_phase(phase, order[i + 1] if i + 1 < len(order) else None)

    def _train_phase(self, phase: Phase, start: int, *, mid_phase: bool) -> None:
        inputs = self._inputs(phase, start)
        with self.strategy.scope():
            set_trainable(self.classifier, phase.fraction)
            model = inputs.model if inputs.model is not None else self.trainer()
            compile_for(model, phase.learning_rate, self.cfg.label_smoothing)
            if mid_phase:
                # Adam's moments and step count: without them the resumed epochs take different steps.
                if not has_optimizer_state(self.ckpt / LAST_WEIGHTS):
                    raise EdgeclsError(f"cannot resume exactly: {self.ckpt / LAST_WEIGHTS} has no optimizer state; "
                                       "start again with --force")
                load_optimizer(model.optimizer, model.trainable_variables, self.ckpt / LAST_WEIGHTS)
            if self.resume and not self.rng_restored:
                # The dropout masks and augmentations the interrupted run would have drawn next.
                restore_rng(model, self.ckpt / LAST_WEIGHTS)
                self.rng_restored = True
        self._announce(phase, start, inputs.on_features)
        rows_before = self.state.epochs_run
        with self.timings.stage(phase.name):
            t0 = time.perf_counter()
            self._fit(model, inputs, phase, start, mid_phase)
        self.rng = rng_states(model)
        if inputs.on_features and phase.name == PHASE_HEAD:
            self._report_cache(time.perf_counter() - t0, self.state.epochs_run - rows_before)

    def _fit(self, model: Any, inputs: PhaseInputs, phase: Phase, start: int, mid_phase: bool) -> None:
        from edgecls.train.divergence import StopOnDivergence

        early = ResumableEarlyStopping(monitor="val_loss", patience=self.cfg.patience, restore_best_weights=True,
                                       resume_from=self.state.early_stopping if mid_phase else None)
        model.fit(
            inputs.train, validation_data=inputs.val, epochs=phase.epochs, initial_epoch=start,
            steps_per_epoch=inputs.steps, class_weight=self.class_weights, verbose=self.verbose,
            callbacks=[StopOnDivergence(phase.name), early,
                       Checkpointer(self.classifier, self.ckpt, self.state, phase.name, early_stopping=early),
                       *_tensorboard(self.run.logs / phase.name), *self.callbacks],
        )

    def _end_phase(self, phase: Phase, next_phase: Optional[str]) -> None:
        """The next phase starts from the best weights so far, and a crash right here resumes there."""
        restore(self.classifier, self.ckpt, BEST_WEIGHTS)
        self.state.early_stopping = None
        if next_phase is not None:
            self.state.phase, self.state.phase_epochs_done = next_phase, 0
        else:
            self.state.phase, self.state.phase_epochs_done = phase.name, phase.epochs
        # A resumed run that had nothing left to fit in this phase carries the checkpoint's generator states on.
        rng = self.rng if self.rng is not None else read_rng(self.ckpt / LAST_WEIGHTS)
        save_checkpoint(self.ckpt / LAST_WEIGHTS, self.classifier, ResumeState(state=self.state.as_dict(), rng=rng))
        self.state.save(self.ckpt)

    def _announce(self, phase: Phase, start: int, on_features: bool) -> None:
        if not self.verbose:
            return
        what = "new head, backbone frozen" if phase.name == PHASE_HEAD else (
            f"top {phase.fraction:.0%} of the backbone unfrozen, BatchNorm frozen")
        if on_features:
            what += ", on cached backbone features" if phase.name == PHASE_HEAD else f", on cached features at {self.cut.layer}"
        number = [p.name for p in plan_phases(self.cfg)].index(phase.name) + 1
        print(f"Phase {number}/{len(plan_phases(self.cfg))}: {phase.name} ({what}), epochs {start + 1}-{phase.epochs} "
              f"at lr {phase.learning_rate:g}", flush=True)

    # -- the phase's model and data -------------------------------------------------------------

    def _inputs(self, phase: Phase, start: int) -> PhaseInputs:
        on_features = self.state.head_cache == "features" and (phase.name == PHASE_HEAD or self.cut is not None)
        if not on_features:
            return PhaseInputs(None, self.data.train, self.data.val)
        from edgecls.train import feature_cache as fc

        if self.cache is None:  # built in the head phase, or reloaded by a run resumed in the fine-tune phase
            with self.timings.stage("feature_cache"):
                self.cache = self._feature_cache()
        at_cut = phase.name != PHASE_HEAD
        with self.strategy.scope():
            set_trainable(self.classifier, phase.fraction)  # frozen before the model is traced
            if at_cut:
                model = fc.tail_model(self.classifier, self.cut, self.cache.cut_train.dtype.name)
            else:
                model = fc.head_model(self.classifier, self.cache.train.dtype.name)
        # The fine-tune phase draws its own epoch orders (another seed), not a replay of the head's.
        draws = fc.Draws(self.cfg.batch_size, seed=self.cfg.seed + (FINE_TUNE_SEED_OFFSET if at_cut else 0),
                         start_epoch=start, epochs=phase.epochs, oversample=self.cfg.balance == "oversample",
                         at_cut=at_cut)
        train, steps, val = fc.datasets(self.cache, self.data.n_classes, draws)
        return PhaseInputs(model, train, val, steps, on_features=True)

    def _fine_tune_cut(self) -> Any:
        """Where the fine-tune phase trains on cached features (:mod:`edgecls.train.cut`), or None (on the images).

        Decided when the run starts and kept in its state: a run resumed from before this existed
        fine-tunes on the images, as it would have."""
        from edgecls.train.cut import find_cut

        if self.state.head_cache != "features" or self.cfg.fine_tune_epochs <= 0:
            return None
        cut = find_cut(self.classifier, self.cfg.fine_tune_fraction)
        if not self.resume and not self.state.cut_decided:
            self.state.fine_tune_cut, self.state.cut_decided = (cut.layer if cut is not None else None), True
        if not self.state.fine_tune_cut:
            return None
        if cut is None or cut.layer != self.state.fine_tune_cut:
            raise EdgeclsError(f"cannot resume: this run fine-tunes from the cut at {self.state.fine_tune_cut}, "
                               "this edgecls version finds another; start again with --force")
        return cut

    def _feature_cache(self) -> Any:
        """The run's cached features (a resumed run reloads its own, so it trains on the same views), or a new cache."""
        from edgecls.train import feature_cache as fc
        from edgecls.train.models import make_augmentation

        path = self.run.path / "cache" / fc.FEATURES_FILE
        cache = fc.load(path, views=fc.views_for(self.cfg), sizes=self.data.sizes,
                        cut_layer=None if self.cut is None else self.cut.layer)
        if cache is None:
            augment = make_augmentation(self.cfg.seed + fc.VIEW_SEED_OFFSET) if self.cfg.augment else None
            passes = fc.Passes(self.data.train_features, fc.views_for(self.cfg), augment=augment,
                               val=self.data.val, test=self.data.test)
            cache = fc.build(self.classifier, passes, self.cut)
            fc.save(cache, path)
        return cache

    def _report_cache(self, head_s: float, epochs_run: int) -> None:
        from edgecls.train import feature_cache as fc

        draws = len(fc.epoch_order(self.cache.train_labels, self.cache.views, 0, self.cfg.seed,
                                   oversample=self.cfg.balance == "oversample"))
        record = fc.describe(self.cache, head_s=head_s, epochs_run=epochs_run, n_epoch_draws=draws,
                             dtype=self.cache.train.dtype.name)
        self.state.head_cache_record = record
        if self.verbose:
            print(fc.summary_line(record), flush=True)


def _tensorboard(folder: Path) -> list:
    """TensorBoard logging when the package is installed (TF 2.21 no longer pulls it in)."""
    import importlib.util

    from edgecls.core.keras import keras

    if importlib.util.find_spec("tensorboard") is None:
        return []
    return [keras.callbacks.TensorBoard(str(folder), profile_batch=0)]
