"""``edgecls train``: an image folder -> a run folder (model.keras, metrics, plots).

Options are :class:`~edgecls.core.config.TrainConfig`'s fields (:mod:`edgecls.cli.options`), checked
where they are parsed, so a typo fails in a fraction of a second, before TensorFlow loads.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import click

from edgecls.cli.options import config_options
from edgecls.cli.report import refresh_after
from edgecls.core.config import PruneConfig, TrainConfig, field_help


def register(group: click.Group) -> None:
    """Add this area's commands to the edgecls group."""
    group.add_command(train_cmd)


def _backbone_help() -> str:
    from edgecls.train.backbones import available  # TF-free

    return f"{field_help(TrainConfig, 'backbone')} One of: {', '.join(available())}."


@click.command("train")
@click.argument("data", metavar="[DATA]", required=False, type=click.Path(path_type=Path))
@config_options(
    TrainConfig, "out", "backbone", "alpha", "minimalistic", "size", "weights", "epochs", "fine_tune_epochs",
    "fine_tune_fraction", "batch_size", "learning_rate", "fine_tune_learning_rate", "label_smoothing", "dropout",
    "patience", "augment", "seed", "val_fraction", "test_fraction", "cache", "cache_budget_mb", "labels_csv",
    "balance", "mixed_precision", "strategy", "head_cache", "head_cache_views", "prune", "prune_epochs", "calibrate",
    "keep", "unknown_threshold", "negatives",
    out={"required": True},
    backbone={"help": _backbone_help()},
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint (uses its saved config; "
              "restores weights, optimizer state, epoch and data order, or refuses).")
@click.option("--worker-dir", type=click.Path(path_type=str), default=None, metavar="DIR",
              help="Multi-worker training: where a non-chief worker keeps its checkpoints and input cache on its "
              "own machine (default: $XDG_STATE_HOME or ~/.local/state, then edgecls/workers/). "
              "Give the same DIR with --resume.")
@click.option("--force", is_flag=True, help="Replace an existing run: the new run is built in OUT.new and swapped in only "
              "when complete; an old run holding exports or other files is moved to OUT.replaced-<time>.")
def train_cmd(data: Optional[Path], resume: bool, force: bool, worker_dir: Optional[str], **options) -> None:
    """Train a classifier on DATA (DATA/<class>/*, or DATA/train|val[|test]/<class>/*) into the run folder OUT.

    With --labels-csv FILE, DATA is a folder of images and FILE lists path,label[,split] rows.

    Phase 1 trains a new head on the frozen backbone; phase 2 fine-tunes the top of the backbone.
    The run keeps model.keras (input: raw RGB 0-255 at --size), labels.txt, metrics.json and plots.
    """
    from edgecls.core.errors import EdgeclsError
    from edgecls.train import cluster
    from edgecls.train.checks import check_run_dir, check_train_config

    out = Path(options["out"])
    # A non-chief cluster worker never looks at OUT (the chief's run, maybe on another machine).
    task = cluster.task_for(TrainConfig().strategy if resume else options["strategy"])
    worker = task if task is not None and not task.is_chief else None
    if resume:
        if force:
            raise EdgeclsError("--resume and --force contradict each other; choose one")
        if worker is None:
            check_run_dir(str(out), resume=True)
        cfg = TrainConfig(out=str(out))
        click.echo(f"Resuming {out} with its saved config.json (other options are ignored)." if worker is None else
                   f"Resuming {worker.name} of {out} from its worker folder.")
    else:
        if data is None:
            raise EdgeclsError("missing DATA: the image folder to train on (or use --resume with an existing --out)")
        if not data.is_dir():
            raise EdgeclsError(f"data folder not found: {data}")
        if options.get("labels_csv") and not Path(options["labels_csv"]).is_file():
            raise EdgeclsError(f"labels CSV not found: {options['labels_csv']}")
        cfg = TrainConfig(data=str(data), **{**options, "out": str(out)})
        check_train_config(cfg)  # before TensorFlow loads: a typo costs a fraction of a second
        if worker is None:
            check_run_dir(cfg.out, force=force, data=cfg.data)
    if worker is not None:
        folder = (cluster.worker_folder_to_resume if resume else cluster.worker_folder)(out, worker, worker_dir)
        cluster.check_worker_folder(folder, worker, out, resume=resume, force=force)

    from edgecls.train.fit import summary, train  # heavy: TensorFlow

    try:
        run = train(cfg, resume=resume, force=force, worker_dir=worker_dir)
    except KeyboardInterrupt:
        if worker is not None:
            again = f" --worker-dir {shlex.quote(worker_dir)}" if worker_dir else ""
            click.echo(f"Stopped. Continue with the chief's command: edgecls train --resume --out "
                       f"{shlex.quote(str(out))}{again}", err=True)
            raise
        from edgecls.core.rundir import staging_path

        where = staging_path(cfg.out) if force and not resume else Path(cfg.out)
        if (where / "checkpoints" / "state.json").is_file():
            kept = f" ({cfg.out} is untouched until it finishes)" if where != Path(cfg.out) else ""
            click.echo(f"Stopped. Continue with: edgecls train --resume --out {shlex.quote(str(where))}{kept}",
                       err=True)
        raise
    if worker is not None:
        return  # the chief reports the run (and prunes it when asked)
    saved = run.train_config()  # on --resume, --prune comes from the run's own config
    if saved.prune is not None:
        # Two stages composed here, one level above both: training never imports pruning.
        from edgecls.optimize import prune

        prune.prune_run(PruneConfig(run=str(run.path), sparsity=saved.prune, epochs=saved.prune_epochs,
                                    batch_size=saved.batch_size, force=True))
    click.echo(summary(run))
    if run.pruned_model_path.is_file() and saved.prune is not None:
        click.echo(f"pruned:  {run.pruned_model_path}")
    refresh_after(run.path)
