"""digits-train: fetch the data, train the tutorial's presets and export TF Serving models."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client.arguments import checked, positive_int
from client.contract import DEFAULT_MODEL_BASE, DEFAULT_MODEL_NAME
from trainer.data import (
    DATASETS,
    MIRROR_SYMMETRIC_DATASETS,
    SOURCES,
    TRAIN_SIZE,
    DataError,
    Dataset,
    default_data_dir,
    prepare_data,
)
from trainer.precision import PRECISIONS, accelerator_count, resolve_precision
from trainer.presets import AUGMENTOR_CROPS, LAYER_DEFAULTS, PRESETS, SEED_PRESETS, Preset, TrainConfig

if TYPE_CHECKING:  # the TensorFlow import waits until a command needs it
    from trainer.member_store import MemberStore
    from trainer.paired import Misclassified
    from trainer.train import TrainResult

DEFAULT_REPORTS_DIR = "reports"
SEED_MAX = 2**32 - 1  # numpy's seeds (keras.utils.set_random_seed) are 32-bit unsigned
END_OF_RUN_MODULES = ("trainer.report", "trainer.export")  # imported lazily, yet before any fit
QUICK = {"epochs": 1, "limit_train": 5_000, "val_size": 1_000}  # reproduce-seed --quick: a smoke run
TUNE_QUICK = {  # tune --quick: a smoke run of the whole pipeline in seconds
    "max_trials": 3, "max_epochs": 2, "limit_train": 600, "val_size": 300, "initial_random_trials": 2,
}


def build_parser() -> argparse.ArgumentParser:
    """The digits-train argument parser."""
    parser = argparse.ArgumentParser(prog="digits-train", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="fetch MNIST and Fashion-MNIST into the data dir and verify them")
    data.add_argument(
        "--dataset", action="append", choices=DATASETS,
        help="fetch only this dataset (repeatable; default: both); mnist alone needs no apt-get",
    )
    _add_data_dir(data)
    data.set_defaults(handler=_cmd_data)

    train = commands.add_parser("train", help="train a preset and export the next model version")
    train.add_argument(
        "--preset", required=True, choices=sorted(PRESETS), help="named recipe (see trainer/presets.py)"
    )
    train.add_argument("--epochs", type=positive_int, help="override the preset's epochs")
    train.add_argument("--batch-size", type=positive_int, help="override the preset's batch size")
    train.add_argument(
        "--seed", type=_seed,
        help=f"override the preset's random seed, 0 to {SEED_MAX} (an ensemble's members take SEED, "
        "SEED+1, ...)",
    )
    train.add_argument(
        "--augment",
        type=_strength,
        help="strength of the training-only augmentation, 0 (off) to 2; at 1, digits get Deotte's "
        "rotation/zoom/shift and Fashion-MNIST a left-right flip, unless the preset names its own "
        "(resnet: shift, rotation and grid distortion)",
    )
    train.add_argument(
        "--augment-policy", metavar="NAME",
        help="a named training-only augmentation (trainer/augment.py) instead of the preset's: e.g. "
        "shift-rotate-crop-grid, T. Doucet's with each rotation zoomed until its frame fills the image",
    )
    train.add_argument(
        "--elastic", type=_alpha, metavar="ALPHA",
        help="add Simard's elastic distortion to the training-only augmentation: a smooth random field "
        "(sigma 4 px) scaled by ALPHA (34: Simard's, about 1.3 px per pixel); 0: none",
    )
    train.add_argument(
        "--elastic-probability", type=_probability, metavar="P",
        help="with --elastic: the share of training images distorted (default 1); the rest stay crisp",
    )
    train.add_argument(
        "--clean-epochs", type=_non_negative_int, metavar="N",
        help="train the last N epochs on the images as they are, augmentation off (a clean finish); 0: "
        "augment to the end. Default: the preset's share of the epochs on digits (best: 5 of 30), none "
        "on Fashion-MNIST",
    )
    train.add_argument("--members", type=positive_int, help="ensemble size (>1 averages that many seeds)")
    train.add_argument(
        "--members-dir", type=Path, metavar="DIR",
        help="for an ensemble: keep each member in DIR as it finishes (default MODELS_DIR/.members, which "
        "servers never read), and reuse the members an interrupted or earlier run of the same recipe on "
        "the same data left there",
    )
    train.add_argument("--dataset", choices=DATASETS, default="mnist")
    train.add_argument(
        "--mirror-average", action=argparse.BooleanOptionalAction,
        help="serve the mean softmax of each image and its left-right mirror, inside the exported graph, "
        "and choose the epoch on that: twice the serving compute (default: on for Fashion-MNIST, where "
        "validation chose it; never for digits)",
    )
    train.add_argument(
        "--layer-defaults", choices=LAYER_DEFAULTS,
        help="whose defaults the network's layers take: keras (the default), or pytorch (batch norm "
        "momentum 0.1 and epsilon 1e-5, weights drawn uniform in +-1/sqrt(fan_in)) for recipes written in "
        "PyTorch, such as resnet's",
    )
    train.add_argument(
        "--augmentor-crops", action="store_true",
        help="zoom into each digit as T. Doucet's Augmentor pipeline crops it: training on a 25x25 window at "
        "a random whole-pixel offset and serving the centre 24x24 (Pillow rounds his centre box), both "
        "resized bicubically to 28x28; replaces resnet's fixed centre crop, and gives other presets one. "
        "With resnet pair it with --augment-policy rotate-crop-grid, whose shift this crop replaces",
    )
    train.add_argument(
        "--label-smoothing", type=_below_one, metavar="EPS",
        help="train against (1-EPS) * one-hot + EPS/10 instead of the one-hot labels (e.g. 0.1); "
        "0: plain one-hot (the default for every preset but fast)",
    )
    train.add_argument(
        "--weight-decay", type=_below_one, metavar="WD",
        help="decoupled weight decay (AdamW: each step also shrinks every weight by rate * WD), for the "
        "presets trained with Adam (e.g. 0.05); 0: none (the default)",
    )
    train.add_argument(
        "--weight-average", type=_below_one, metavar="DECAY",
        help="validate, choose and export an exponential moving average of the weights, updated every "
        "batch with this decay (e.g. 0.999, about 1,000 batches); 0: the trained weights (the default)",
    )
    train.add_argument(
        "--precision", choices=PRECISIONS,
        help="training arithmetic: float32, or bfloat16 (mixed: bfloat16 compute, float32 weights; the "
        "exported model computes in float32 either way); auto: bfloat16 on a CPU-only machine whose CPU "
        "has native bfloat16 (avx512_bf16 or amx_bf16), else float32. Default: the preset's",
    )
    _add_data_dir(train, default=None)  # None: not given, so that another --source can refuse one given
    train.add_argument(
        "--source",
        choices=SOURCES,
        default="npz",
        help="where to read the data: our npz (default), ~/.keras cache, IDX files, Keras download",
    )
    train.add_argument(
        "--idx-dir", type=Path, help="folder with the four IDX files, gzipped or not (with --source idx)"
    )
    train.add_argument(
        "--limit-train", type=positive_int, help="train on a random subset of this many images"
    )
    train.add_argument(
        "--val-size", type=_val_size,
        help="validation hold-out from the 60k that picks the epoch (default 5000); 0: fit all 60k and "
        "keep the last epoch",
    )
    _add_export_args(train)
    train.set_defaults(handler=_cmd_train)

    combine = commands.add_parser(
        "combine", help="average exported models into one ensemble version, without training"
    )
    combine.add_argument(
        "version_dirs", nargs="+", type=Path, metavar="VERSION_DIR",
        help="exported versions, e.g. models/mnist/3 (an ensemble brings all its members)",
    )
    _add_export_args(combine)
    _add_data_dir(combine)
    combine.set_defaults(handler=_cmd_combine)

    compare = commands.add_parser(
        "compare", help="pair models by the test images each gets wrong (exact McNemar), pooled over pairs"
    )
    compare.add_argument(
        "sources", nargs="+", type=Path, metavar="NEW OLD",
        help="pairs of models: a report folder or its model_card.json, an exported version, or a JSON "
        "list of misclassified test indices (as `digits-train errors` prints)",
    )
    _add_split(compare)
    _add_data_dir(compare)
    compare.set_defaults(handler=_cmd_compare)

    errors = commands.add_parser(
        "errors", help="print the indices of the test (or validation) images a model gets wrong"
    )
    errors.add_argument("source", type=Path, help="a report folder, a model_card.json or an exported version")
    _add_split(errors)
    _add_data_dir(errors)
    errors.set_defaults(handler=_cmd_errors)

    tune = commands.add_parser("tune", help="KerasTuner search over the tutorial's and modern knobs")
    tune.add_argument(
        "--budget", type=_positive_float, default=30.0,
        help="minutes of search (default 30): then no trial starts, and one still running stops and runs "
        "again on resume (a run's first always finishes); the best trial's re-training comes after",
    )
    tune.add_argument("--max-trials", type=positive_int, help="stop after this many trials in the project")
    tune.add_argument("--max-epochs", type=positive_int, help="largest epochs value a trial may pick")
    tune.add_argument("--seeds", type=positive_int, help="re-train the best trial with this many seeds")
    tune.add_argument(
        "--directory", default="reports/tuning", help="KerasTuner project dir; an existing one is resumed"
    )
    tune.add_argument("--dataset", choices=DATASETS, default="mnist")
    tune.add_argument("--limit-train", type=positive_int, help="search on a random subset of N images")
    tune.add_argument(
        "--quick", action="store_true", help="smoke run: 600 images, up to 2 epochs, 3 trials"
    )
    tune.add_argument("--reports-dir", default=DEFAULT_REPORTS_DIR)
    _add_data_dir(tune)
    tune.set_defaults(handler=_cmd_tune)

    reproduce = commands.add_parser("reproduce-seed", help="train the tutorial's six presets, write a table")
    _add_data_dir(reproduce)
    reproduce.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK['epochs']} epoch on {QUICK['limit_train']} images per preset",
    )
    reproduce.add_argument(
        "--only",
        action="append",
        choices=[p.name for p in SEED_PRESETS],
        help="run only this preset (repeatable)",
    )
    reproduce.add_argument("--reports-dir", default=DEFAULT_REPORTS_DIR)
    reproduce.set_defaults(handler=_cmd_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `digits-train`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "mirror_average", None) and args.dataset not in MIRROR_SYMMETRIC_DATASETS:
        symmetric = ", ".join(sorted(MIRROR_SYMMETRIC_DATASETS))
        parser.error(f"--mirror-average is for {symmetric} only: a mirrored digit is no digit")
    if getattr(args, "weight_decay", None) and PRESETS[args.preset].train.optimizer not in ("adam", "adamw"):
        parser.error(f"--weight-decay needs a preset trained with Adam; {args.preset} uses "
                     f"{PRESETS[args.preset].train.optimizer}")
    if getattr(args, "clean_epochs", None):
        _check_clean_epochs(parser, preset_from_args(args))
    if getattr(args, "augment_policy", None):
        _check_augment_policy(parser, preset_from_args(args))
    if getattr(args, "members_dir", None) and preset_from_args(args).train.members == 1:
        parser.error(f"--members-dir is for ensembles; {args.preset} trains one network (add --members N)")
    if args.command == "train":
        _check_train(parser, args)
    _check_output_dirs(parser, args)
    try:
        return args.handler(args)
    except DataError as exc:
        print(f"digits-train: data error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("digits-train: interrupted", file=sys.stderr)
        return 130


# Where each --source other than npz reads its data (trainer/data.py), for the message refusing --data-dir.
_SOURCE_PLACES = {
    "keras-cache": "the Keras cache (~/.keras/datasets, or under $KERAS_HOME)",
    "idx": "--idx-dir",
    "keras-download": "Keras' download",
}


def _check_train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse `train` flags that contradict each other or would do nothing, before any data is read."""
    if args.idx_dir is not None and args.source != "idx":
        parser.error(f"--idx-dir is read with --source idx only; this run reads --source {args.source}")
    if args.source == "idx" and args.idx_dir is None:
        parser.error("--source idx needs --idx-dir, the folder holding the four IDX files")
    if args.data_dir is not None and args.source != "npz":
        parser.error(f"--data-dir is read with --source npz only; --source {args.source} reads "
                     f"{_SOURCE_PLACES[args.source]}")
    if args.data_dir is None:
        args.data_dir = str(default_data_dir())
    preset = preset_from_args(args)
    cfg = preset.train
    if args.elastic and not cfg.augment:  # the distortion scales with the strength: 0 leaves every image be
        parser.error(f"--elastic needs augmentation; {preset.name} trains with none (add --augment)")
    if args.elastic_probability is not None and not cfg.elastic:
        parser.error(f"--elastic-probability needs --elastic; {preset.name} has no elastic distortion")
    if cfg.weight_average and resolve_precision(cfg.precision) == "bfloat16":  # "auto" asks the machine
        parser.error(f"--weight-average trains in float32 only, and --precision {cfg.precision} trains in "
                     "bfloat16 here; use --precision float32")
    last_seed = cfg.seed + cfg.members - 1  # member i trains with seed + i (trainer/ensemble.py)
    if cfg.members > 1 and last_seed > SEED_MAX:
        parser.error(f"--seed {cfg.seed} with {cfg.members} members needs seeds up to {last_seed}, above "
                     f"{SEED_MAX}; choose a seed of at most {SEED_MAX - cfg.members + 1}")


def _check_output_dirs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, before any training, a folder the run will write to that cannot be created or written."""
    for flag in ("--models-dir", "--reports-dir", "--members-dir", "--directory"):
        folder = getattr(args, flag[2:].replace("-", "_"), None)
        problem = folder is not None and _unusable_folder(Path(folder))
        if problem:
            parser.error(f"{flag} {folder}: {problem}")
    if getattr(args, "models_dir", None) is not None:  # where the versions go must be a folder too
        model_base = Path(args.models_dir) / args.model_name
        problem = _unusable_folder(model_base)
        if problem:
            parser.error(f"--model-name {args.model_name}: {model_base}: {problem}")


def _model_name(text: str) -> str:
    """A model name is one folder under MODELS_DIR, the name a server serves it by (TF Serving's URLs)."""
    if not text or text in (".", "..") or "/" in text or "\\" in text or text.startswith("."):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a model name: one folder name under --models-dir, without '/' or a leading '.' "
            "(servers skip hidden folders, and the ensemble members live in MODELS_DIR/.members)"
        )
    return text


def _unusable_folder(folder: Path) -> str:
    """Why `folder` cannot be created or written to ("" if it can), without creating anything."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "it" if existing == folder else existing
        return f"{where} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable" if existing != folder else "not writable"
    return ""


def _check_clean_epochs(parser: argparse.ArgumentParser, preset: Preset) -> None:
    """--clean-epochs needs augmentation to switch off and epochs with it before the clean ones."""
    cfg = preset.train
    if not cfg.augment:
        parser.error(f"--clean-epochs needs augmentation; {preset.name} trains with none (add --augment)")
    if cfg.clean_epochs >= cfg.epochs:
        parser.error(f"--clean-epochs must be fewer than the {cfg.epochs} epochs, got {cfg.clean_epochs}")


def _check_augment_policy(parser: argparse.ArgumentParser, preset: Preset) -> None:
    """--augment-policy names a known augmentation, for a training that augments."""
    from trainer.augment import named_policy  # imports Keras: only when the option is used

    try:
        named_policy(preset.train.augment_policy)
    except ValueError as exc:
        parser.error(f"--augment-policy: {exc}")
    if not preset.train.augment:
        parser.error(f"--augment-policy needs augmentation; {preset.name} trains with none (add --augment)")


def _cmd_data(args: argparse.Namespace) -> int:
    prepare_data(args.data_dir, names=args.dataset or DATASETS)
    return 0


def preset_from_args(args: argparse.Namespace) -> Preset:
    """The preset `digits-train train` trains: the named one with the command line's overrides."""
    preset = PRESETS[args.preset].with_overrides(
        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, val_size=args.val_size,
        augment=args.augment, augment_policy=args.augment_policy, elastic=args.elastic,
        elastic_probability=args.elastic_probability,
        clean_epochs=args.clean_epochs,
        members=args.members, weight_average=args.weight_average, label_smoothing=args.label_smoothing,
        weight_decay=args.weight_decay, optimizer="adamw" if args.weight_decay else None,
        precision=args.precision,
    )
    if args.mirror_average is not None:
        preset = preset.with_model(mirror_average=args.mirror_average)
    if args.layer_defaults is not None:
        preset = preset.with_model(layer_defaults=args.layer_defaults)
    if args.augmentor_crops:
        preset = preset.with_model(**AUGMENTOR_CROPS)
    if args.clean_epochs is None:
        clean_epochs = _default_clean_epochs(PRESETS[args.preset].train, preset.train.epochs, args.dataset)
        preset = preset.with_overrides(clean_epochs=clean_epochs)
    return preset


def _default_clean_epochs(named: TrainConfig, epochs: int, dataset: str) -> int:
    """The named preset's clean finish as the same share of `epochs`; none on data it was not chosen for."""
    if dataset != "mnist":  # chosen on digits; Fashion-MNIST's recipe was measured without one
        return 0
    return min(round(named.clean_epochs / named.epochs * epochs), epochs - 1)


def _cmd_train(args: argparse.Namespace) -> int:
    from trainer.data import load_dataset

    # Load (and fail on bad data) before the seconds-long TensorFlow import below.
    dataset = load_dataset(args.dataset, args.data_dir, args.source, args.idx_dir)

    # What the run's end needs is imported now, from the same code as the fit: a broken or half-updated
    # install fails here, not after hours of training with the model unsaved.
    for module in END_OF_RUN_MODULES:
        importlib.import_module(module)
    preset = preset_from_args(args)
    if preset.train.members > 1:
        return _train_ensemble(preset, dataset, args)
    return _train_network(preset, dataset, args)


def _train_ensemble(preset: Preset, dataset: Dataset, args: argparse.Namespace) -> int:
    """Train (or reuse) the members, average them and export the ensemble."""
    from trainer.ensemble import train_ensemble
    from trainer.member_store import MEMBERS_FOLDER, MemberStore

    store = MemberStore(args.members_dir or Path(args.models_dir) / MEMBERS_FOLDER)
    ensemble = train_ensemble(preset, dataset, limit_train=args.limit_train, log=_log, store=store)

    def members_kept(error: BaseException) -> None:
        _export_failed(error, f"the members are kept in {store.root}: run the same command again to average "
                       "them without training")

    return 0 if _report_and_export(ensemble.combined, dataset, args, on_export_failure=members_kept) else 1


def _train_network(preset: Preset, dataset: Dataset, args: argparse.Namespace) -> int:
    """Train one network and export it; if the export fails, keep the network for the same command again."""
    from trainer.member_store import UNEXPORTED_FOLDER, MemberStore
    from trainer.train import train_model

    # A network whose export failed (a full disk) waits here, and the same command again exports it.
    unexported = MemberStore(Path(args.models_dir) / UNEXPORTED_FOLDER)
    result, damaged = _unexported_network(unexported, preset, dataset, args.limit_train)
    kept = result is not None
    if result is None:
        result = train_model(preset, dataset, limit_train=args.limit_train, log=_log)

    def keep_network(error: BaseException) -> None:
        if kept:  # already there, from the run that trained it
            where = unexported.folder(preset, dataset, args.limit_train)
        else:
            try:
                where = unexported.save(preset, result, dataset, args.limit_train, replace_damaged=damaged)
            except OSError as exc:
                _export_failed(error, f"the trained network could not be kept either ({exc})")
                return
        _export_failed(error, f"the trained network is kept in {where}: run the same command again to "
                       "export it without training")

    def drop_kept() -> None:  # exported now (its report may still fail), or a damaged one replaced
        if kept or damaged:  # another run's kept network waits for that run's command
            unexported.discard(preset, dataset, args.limit_train)

    run_dir = _report_and_export(
        result, dataset, args, on_export_failure=keep_network, on_exported=drop_kept
    )
    return 0 if run_dir else 1


def _export_failed(error: BaseException, what_is_kept: str) -> None:
    why = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__  # Ctrl-C has no text
    print(f"digits-train: the export failed ({why}); {what_is_kept}", file=sys.stderr)


def _unexported_network(
    unexported: MemberStore, preset: Preset, dataset: Dataset, limit_train: int | None
) -> tuple[TrainResult | None, bool]:
    """The network an earlier run of this command trained but could not export, if it is kept and whole;
    and whether a damaged one is there (then this run trains anew and replaces it)."""
    from trainer.member_store import MemberStoreError

    try:
        saved = unexported.load(preset, dataset, limit_train)
    except MemberStoreError as exc:
        _log(f"the network an earlier run could not export cannot be reused: {exc}; training anew")
        return None, True
    if saved is not None:
        _log(f"exporting the network an earlier run trained but could not export, from "
             f"{unexported.folder(preset, dataset, limit_train)} (test accuracy {saved.test_accuracy}, "
             f"{saved.test_errors} errors); nothing is trained")
    return saved, False


def _cmd_combine(args: argparse.Namespace) -> int:
    from trainer.combine import combine_exports
    from trainer.data import load_dataset
    from trainer.export import read_model_card
    from trainer.report import plot_errors_by_members
    from trainer.restore import RestoreError

    first = args.version_dirs[0]
    try:
        dataset_name = read_model_card(first)["dataset"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        print(f"digits-train: combine: {first}: no readable model card naming its dataset", file=sys.stderr)
        return 1
    dataset = load_dataset(dataset_name, args.data_dir)
    try:
        combined = combine_exports(args.version_dirs, dataset, log=_log)
    except RestoreError as exc:
        print(f"digits-train: combine: {exc}", file=sys.stderr)
        return 1
    run_dir = _report_and_export(combined.combined, dataset, args, combined.card_fields())
    if run_dir is None:
        return 1
    member_errors = [member.test_errors for member in combined.members]
    curve = plot_errors_by_members(combined.errors_by_size, member_errors, run_dir / "members.png")
    _log(f"members curve: {curve}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from trainer import paired

    if len(args.sources) % 2:
        print("digits-train: compare: give models in pairs, NEW OLD [NEW OLD ...]", file=sys.stderr)
        return 2
    try:
        errors = [_read_errors(source, args, _log) for source in args.sources]
        pairs = [paired.pair(new, old) for new, old in zip(errors[::2], errors[1::2], strict=True)]
    except paired.PairingError as exc:
        print(f"digits-train: compare: {exc}", file=sys.stderr)
        return 1
    for each in pairs:
        _log(f"{each.new.source} vs {each.old.source}: {paired.describe(each)}")
    if len(pairs) > 1:
        _log(f"pooled over {len(pairs)} pairs: {paired.describe_test(paired.pooled(pairs))}")
    return 0


def _read_errors(source: Path, args: argparse.Namespace, log: Callable[[str], None]) -> Misclassified:
    """The images `source` gets wrong on the split `args.split` names."""
    from trainer import paired

    if args.split == "validation":
        return paired.read_validation_errors(source, args.data_dir, log=log)
    return paired.read_test_errors(source, paired.scored_export(args.data_dir, log=log))


def _cmd_errors(args: argparse.Namespace) -> int:
    from trainer.paired import PairingError

    try:
        errors = _read_errors(args.source, args, _log_to_stderr)
    except PairingError as exc:
        print(f"digits-train: errors: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(sorted(errors.indices)))
    return 0


def _report_and_export(
    result: TrainResult,
    dataset: Dataset,
    args: argparse.Namespace,
    card_fields: dict[str, Any] | None = None,
    on_export_failure: Callable[[BaseException], None] | None = None,
    on_exported: Callable[[], None] | None = None,
) -> Path | None:
    """Export the model as the next version and write the run's report, as `train` and `combine` do;
    returns the report's folder, None (said on stderr) if none could be created. `on_exported` is called
    once the version is published, before the report; `on_export_failure` with the export's error, which
    is raised on whatever the callback does."""
    from trainer.export import export_model
    from trainer.report import model_card, new_run_dir, write_run_report

    try:
        run_dir: Path | None = new_run_dir(args.reports_dir, f"{result.preset.name}-{dataset.name}")
    except OSError as exc:  # checked before the fit, yet a folder can go bad in the hours since
        run_dir, run_dir_error = None, exc
    report_dir = str(run_dir) if run_dir else None
    card = {**model_card(result, dataset), **(card_fields or {}), "report_dir": report_dir}
    # The model first: a report that cannot be written (a full disk, a plotting error) loses no training.
    try:
        version_dir = export_model(
            result.model, args.models_dir, args.model_name, card, warmup_images=dataset.x_test
        )
    except (Exception, KeyboardInterrupt) as exc:
        if on_export_failure:
            try:
                on_export_failure(exc)
            except (Exception, KeyboardInterrupt) as also:  # the export's error is the one to raise
                _export_failed(exc, f"then keeping what it needs failed too ({type(also).__name__}: {also})")
        raise
    _log(f"exported: {version_dir}")
    if on_exported:  # a Ctrl-C just here leaves a kept network exported too: the next run exports it again
        on_exported()
    if run_dir is None:
        _log(f"test accuracy: {result.test_accuracy} ({result.test_errors} errors)")
        print(f"digits-train: the model is exported to {version_dir}, but no report folder could be created "
              f"in {args.reports_dir}: {run_dir_error}", file=sys.stderr)
        return None
    try:
        write_run_report(result, dataset, run_dir, card)
    except Exception:
        print(f"digits-train: the model is exported to {version_dir}, but its report in {run_dir} could "
              "not be written:", file=sys.stderr)
        raise
    _log(f"report: {run_dir}")
    _log(f"test accuracy: {result.test_accuracy} ({result.test_errors} errors)")
    return run_dir


def _cmd_tune(args: argparse.Namespace) -> int:
    from trainer.data import load_dataset

    dataset = load_dataset(args.dataset, args.data_dir)
    from trainer.report import new_run_dir
    from trainer.tune import (
        TuneConfig,
        TuneError,
        retrain_best,
        retrain_summary,
        run_search,
        write_tune_report,
    )

    quick = TUNE_QUICK if args.quick else {}
    overrides = {
        "budget_minutes": args.budget,
        "max_trials": args.max_trials,
        "max_epochs": args.max_epochs,
        "seeds": args.seeds,
        "limit_train": args.limit_train,
    }
    cfg = TuneConfig(**{**quick, **{k: v for k, v in overrides.items() if v is not None}})
    try:
        rows = run_search(dataset, cfg, args.directory, log=_log)
    except TuneError as exc:
        print(f"digits-train: tune: --directory {exc}", file=sys.stderr)
        return 2
    if not rows or rows[0].val_accuracy is None:
        print("digits-train: tune: no trial finished; raise --budget or --max-trials", file=sys.stderr)
        return 1
    best = rows[0]
    run_dir = new_run_dir(args.reports_dir, f"tune-{dataset.name}")
    write_tune_report(rows, None, cfg, run_dir, dataset.name)  # the search's table, before the re-training
    _log(f"best trial {best.trial_id} (val_acc {best.val_accuracy:.4f}); trials in {run_dir}; re-training "
         f"with {cfg.seeds} seeds")
    summary = retrain_summary(retrain_best(best, dataset, cfg, log=_log))
    paths = write_tune_report(rows, summary, cfg, run_dir, dataset.name)
    _log(paths["markdown"].read_text())
    _log("written: " + ", ".join(str(path) for path in paths.values()))
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from trainer.data import load_dataset

    dataset = load_dataset("mnist", args.data_dir)
    from trainer.report import ReproduceRow, new_run_dir, reproduce_table, write_run_report
    from trainer.train import train_model

    presets = [p for p in SEED_PRESETS if not args.only or p.name in args.only]
    rows = []
    for preset in presets:
        if args.quick:
            preset = preset.with_overrides(epochs=QUICK["epochs"], val_size=QUICK["val_size"])
        start = time.perf_counter()
        result = train_model(
            preset, dataset, limit_train=QUICK["limit_train"] if args.quick else None, log=_log
        )
        write_run_report(result, dataset, new_run_dir(args.reports_dir, f"reproduce-{preset.name}"))
        rows.append(
            ReproduceRow(
                preset=preset.name,
                params=result.params,
                tutorial_accuracy=preset.tutorial_test_accuracy,
                test_accuracy=result.test_accuracy,
                best_epoch=result.best_epoch,
                epochs=preset.train.epochs,
                train_seconds=result.seconds,
                wall_seconds=time.perf_counter() - start,
            )
        )
    mode = (
        f"quick smoke run: {QUICK['epochs']} epoch, {QUICK['limit_train']:,} training images"
        if args.quick
        else "the tutorial's settings"
    )
    notes = [
        f"Mode: {mode}. Validation: a stratified hold-out of {result.val_size:,} of the {TRAIN_SIZE:,} "
        f"training images picks the epoch; the test set ({len(dataset.y_test):,} images) is scored once.",
        "The tutorial's figure is its last-epoch accuracy on the test set, which it also used as validation.",
        "train = model.fit time; wall adds test scoring and the report plots "
        f"(machine: {os.cpu_count()} CPU cores, {accelerator_count()} GPUs).",
        f"Command: `digits-train reproduce-seed{' --quick' if args.quick else ''}`; per-preset curves, "
        f"failure galleries and model cards under {args.reports_dir}/*-reproduce-*/.",
    ]
    path = Path(args.reports_dir) / ("reproduce_seed_quick.md" if args.quick else "reproduce_seed.md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(reproduce_table(rows, "Reproducing the tutorial's six networks", notes))
    _log(path.read_text())
    _log(f"written: {path}")
    return 0


def _add_export_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models-dir", default=DEFAULT_MODEL_BASE, help="export under MODELS_DIR/MODEL_NAME/<version>"
    )
    parser.add_argument(
        "--model-name", type=_model_name, default=DEFAULT_MODEL_NAME,
        help=f"the served model's name: versions go to MODELS_DIR/MODEL_NAME/ (default {DEFAULT_MODEL_NAME})",
    )
    parser.add_argument(
        "--reports-dir", default=DEFAULT_REPORTS_DIR, help="run outputs go to REPORTS_DIR/<run-id>/"
    )


def _add_split(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--split", choices=("test", "validation"), default="test",
        help="test (default), or the validation split an export was trained beside: indices into the "
        "training images, scored from exported versions, paired only where seed and size match",
    )


def _add_data_dir(parser: argparse.ArgumentParser, default: str | None = "") -> None:
    parser.add_argument(
        "--data-dir", default=str(default_data_dir()) if default == "" else default,
        help="default: $DIGITS_DATA_DIR or data",
    )


_seed = checked(int, lambda v: 0 <= v <= SEED_MAX, f"must be between 0 and {SEED_MAX}")
_non_negative_int = checked(int, lambda v: v >= 0, "must be 0 or more")
_positive_float = checked(float, lambda v: v > 0, "must be positive")  # --budget inf: no time limit
_strength = checked(float, lambda v: 0.0 <= v <= 2.0, "must be between 0 and 2")
_alpha = checked(float, lambda v: 0.0 <= v <= 100.0, "must be between 0 and 100")
_probability = checked(float, lambda v: 0.0 <= v <= 1.0, "must be between 0 and 1")
_below_one = checked(float, lambda v: 0.0 <= v < 1.0, "must be at least 0 and below 1")
"""An EMA decay, a label smoothing or a weight decay: 0 (none) up to, not including, 1."""


def _val_size(text: str) -> int:
    value = _non_negative_int(text)
    if value >= TRAIN_SIZE:
        raise argparse.ArgumentTypeError(
            f"must be smaller than the {TRAIN_SIZE} training images, got {value}"
        )
    return value


def _log(message: str) -> None:
    print(message, flush=True)


def _log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
