"""digits-train: argparse errors on bad arguments, clear data errors, and a real end-to-end smoke run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.cli import build_parser, main, preset_from_args
from trainer.presets import PRESETS

DIGITS_TRAIN = Path(sys.executable).with_name("digits-train")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "required"),
        (["fly"], "invalid choice"),
        (["train"], "--preset"),
        (["train", "--preset", "no-such-preset"], "invalid choice"),
        (["train", "--preset", "seed-best", "--epochs", "0"], "must be positive"),
        (["train", "--preset", "seed-best", "--epochs", "ten"], "not an integer"),
        (["train", "--preset", "seed-best", "--val-size", "60000"], "smaller than the 60000"),
        (["train", "--preset", "seed-best", "--val-size", "-1"], "must be 0 or more"),
        (["train", "--preset", "seed-best", "--limit-train", "-1"], "must be positive"),
        (["train", "--preset", "seed-best", "--dataset", "cifar10"], "invalid choice"),
        (["train", "--preset", "best", "--label-smoothing", "1"], "below 1"),
        (["train", "--preset", "best", "--weight-decay", "-0.1"], "at least 0"),
        (["train", "--preset", "seed-best", "--weight-decay", "0.05"], "needs a preset trained with Adam"),
        (["train", "--preset", "best", "--clean-epochs", "-1"], "must be 0 or more"),
        (["train", "--preset", "best", "--clean-epochs", "30"], "fewer than the 30 epochs"),
        (["train", "--preset", "best", "--epochs", "5", "--clean-epochs", "5"], "fewer than the 5 epochs"),
        (["train", "--preset", "fast", "--clean-epochs", "1"], "needs augmentation"),
        (["train", "--preset", "best", "--augment", "0", "--clean-epochs", "1"], "needs augmentation"),
        (["train", "--preset", "resnet", "--augment-policy", "nope"], "known: shift-rotate-grid"),
        (["train", "--preset", "fast", "--augment-policy", "shift-rotate-grid"], "needs augmentation"),
        (["train", "--preset", "resnet", "--layer-defaults", "torch"], "invalid choice"),
        (["reproduce-seed", "--only", "seed-worst"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.fixture
def handlers_run(monkeypatch) -> list[str]:
    """The commands that reached their handler, each replaced by a stand-in: a check that lets bad arguments
    through then trains nothing."""
    import trainer.cli

    ran: list[str] = []
    for name in ("_cmd_train", "_cmd_combine", "_cmd_tune", "_cmd_reproduce"):
        monkeypatch.setattr(trainer.cli, name, lambda args, name=name: ran.append(name) or 0)
    return ran


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "best", "--seed", "-1"], "must be between 0 and 4294967295, got -1"),
        (["--preset", "best", "--seed", "4294967296"], "must be between 0 and 4294967295"),
        (["--preset", "ensemble", "--seed", "4294967295"], "needs seeds up to 4294967300"),  # 6 members
        (["--preset", "best", "--members", "2", "--seed", "4294967295"], "at most 4294967294"),
        (["--preset", "best", "--precision", "bfloat16", "--weight-average", "0.999"], "float32 only"),
        (["--preset", "fast", "--elastic", "34"], "--elastic needs augmentation; fast trains with none"),
        (["--preset", "best", "--elastic-probability", "0.5"], "--elastic-probability needs --elastic"),
        (["--preset", "best", "--elastic", "0", "--elastic-probability", "0.5"], "needs --elastic"),
        (["--preset", "best", "--idx-dir", "idx"], "--idx-dir is read with --source idx only"),
        (["--preset", "best", "--source", "idx"], "--source idx needs --idx-dir"),
        (["--preset", "best", "--source", "keras-cache", "--data-dir", "d"],
         "--data-dir is read with --source npz only; --source keras-cache reads the Keras cache"),
        (["--preset", "best", "--source", "idx", "--idx-dir", "idx", "--data-dir", "d"],
         "--data-dir is read with --source npz only; --source idx reads --idx-dir"),
        (["--preset", "best", "--source", "keras-download", "--data-dir", "d"],
         "--data-dir is read with --source npz only; --source keras-download reads Keras' download"),
    ],
)
def test_training_flags_that_fail_or_do_nothing_exit_2(argv, message, handlers_run, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", *argv])
    assert exc.value.code == 2 and handlers_run == []
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--preset", "best", "--seed", "0"],
        ["--preset", "best", "--seed", "4294967295"],
        ["--preset", "ensemble", "--seed", "4294967290"],  # members 4294967290..4294967295
        ["--preset", "best", "--elastic", "34", "--elastic-probability", "0.5"],
        ["--preset", "fast", "--augment", "1", "--elastic", "34"],
        ["--preset", "best", "--source", "idx", "--idx-dir", "idx"],
        ["--preset", "best", "--precision", "float32", "--weight-average", "0.999"],
    ],
)
def test_training_flags_at_their_limits_reach_the_training(argv, handlers_run):
    assert main(["train", *argv]) == 0 and handlers_run == ["_cmd_train"]


@pytest.mark.parametrize(
    ("argv", "data_dir"),
    [
        (["--data-dir", "given"], "given"),
        (["--source", "npz", "--data-dir", "given"], "given"),
        ([], "from-env"),  # $DIGITS_DATA_DIR, as every command
        (["--source", "keras-cache"], "from-env"),  # set by make for every command: not refused
    ],
)
def test_the_data_dir_a_training_reads(argv, data_dir, monkeypatch):
    """--data-dir (else $DIGITS_DATA_DIR) reaches the training; only an explicit one with another
    --source is refused (above)."""
    import trainer.cli

    monkeypatch.setenv("DIGITS_DATA_DIR", "from-env")
    seen = []
    monkeypatch.setattr(trainer.cli, "_cmd_train", lambda args: seen.append(args.data_dir) or 0)
    assert main(["train", "--preset", "best", *argv]) == 0
    assert seen == [data_dir]


def test_unusable_output_folders_are_refused_before_any_work(tmp_path, handlers_run, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    cases = [
        (["train", "--preset", "seed-best", "--reports-dir", str(a_file / "sub")],
         f"--reports-dir {a_file / 'sub'}: {a_file} is a file, not a folder"),
        (["train", "--preset", "seed-best", "--models-dir", str(a_file)], "--models-dir"),
        (["train", "--preset", "ensemble", "--members-dir", str(a_file / "m")], "--members-dir"),
        (["combine", "models/mnist/1", "--reports-dir", str(a_file)], "--reports-dir"),
        (["tune", "--directory", str(a_file)], f"--directory {a_file}: it is a file, not a folder"),
        (["tune", "--reports-dir", str(a_file / "sub")], "--reports-dir"),
        (["reproduce-seed", "--reports-dir", str(a_file / "sub")], "--reports-dir"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2, argv
        assert message in capsys.readouterr().err, argv
    assert handlers_run == []


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../mnist", ".members", ".hidden"])
def test_a_model_name_that_is_no_single_visible_folder_is_refused(tmp_path, handlers_run, capsys, name):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--preset", "fast", "--models-dir", str(tmp_path / "models"), "--model-name", name])
    assert exc.value.code == 2 and handlers_run == []
    assert "is not a model name" in capsys.readouterr().err


def test_a_file_where_the_versions_go_is_refused_before_any_work(tmp_path, handlers_run, capsys):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mnist").write_text("not a folder")
    for command in (["train", "--preset", "fast"], ["combine", "models/mnist/1", "models/mnist/2"]):
        with pytest.raises(SystemExit) as exc:
            main([*command, "--models-dir", str(tmp_path / "models"), "--reports-dir", str(tmp_path / "r")])
        assert exc.value.code == 2
        assert f"{tmp_path / 'models' / 'mnist'}: it is a file, not a folder" in capsys.readouterr().err
    assert handlers_run == []
    assert main(["train", "--preset", "fast", "--models-dir", str(tmp_path / "models"),
                 "--model-name", "digits"]) == 0 and handlers_run == ["_cmd_train"]


def test_damaged_data_or_an_unusable_data_dir_is_exit_1_not_a_traceback(tmp_path, mnist_data, monkeypatch,
                                                                        capsys, no_keras_cache):
    import trainer.data

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    raw = bytearray(Path(mnist_data.source).read_bytes())
    raw[60:124] = b"\xff" * 64  # inside the first array's deflate stream: a zlib.error, deep in numpy
    (damaged / "mnist.npz").write_bytes(raw)
    assert main(["train", "--preset", "seed-best", "--data-dir", str(damaged)]) == 1
    err = capsys.readouterr().err
    assert f"{damaged / 'mnist.npz'}: unreadable, the file is damaged" in err and "`digits-train data`" in err

    def offline(log):
        raise trainer.data.DataError("offline")

    monkeypatch.setattr(trainer.data, "fetch_mnist", offline)
    assert main(["data", "--data-dir", str(damaged)]) == 1  # the damaged file is fetched again
    out, err = capsys.readouterr()
    assert "the file is damaged" in out and err == "digits-train: data error: offline\n"

    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert main(["data", "--data-dir", str(a_file / "sub")]) == 1
    err = capsys.readouterr().err
    assert f"{a_file / 'sub'}: cannot create the data folder" in err and "Traceback" not in err


def test_data_for_mnist_alone_needs_no_apt_get(tmp_path, mnist_data, monkeypatch, capsys, no_keras_cache):
    import trainer.data

    def no_apt_get(log):
        raise trainer.data.DataError("fetching Fashion-MNIST needs apt-get and dpkg")

    monkeypatch.setattr(trainer.data, "fetch_fashion_mnist", no_apt_get)
    shutil.copy(mnist_data.source, tmp_path / "mnist.npz")
    assert main(["data", "--dataset", "mnist", "--data-dir", str(tmp_path)]) == 0  # make up, train, demo
    assert "mnist.npz: present and verified" in capsys.readouterr().out
    assert main(["data", "--data-dir", str(tmp_path)]) == 1  # by default both
    assert "needs apt-get" in capsys.readouterr().err


def test_missing_data_is_one_clear_line_not_a_traceback(tmp_path):
    result = subprocess.run(
        [str(DIGITS_TRAIN), "train", "--preset", "seed-best", "--data-dir", str(tmp_path / "empty")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "mnist.npz: missing" in result.stderr and "make data" in result.stderr


def test_train_smoke_exports_a_version_and_writes_the_report(tmp_path, mnist_data):
    env = {**os.environ, "DIGITS_DATA_DIR": str(Path(mnist_data.source).parent)}
    result = subprocess.run(
        [str(DIGITS_TRAIN), "train", "--preset", "seed-best", "--epochs", "2", "--batch-size", "50",
         "--limit-train", "2000", "--val-size", "500", "--label-smoothing", "0.1",
         "--models-dir", str(tmp_path / "models"),
         "--reports-dir", str(tmp_path / "reports"), "--model-name", "digits"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "epoch   1/2" in result.stdout and "epoch   2/2" in result.stdout  # per-epoch progress
    version_dir = tmp_path / "models" / "digits" / "1"
    assert f"exported: {version_dir}" in result.stdout
    assert (version_dir / "saved_model.pb").is_file()
    card = json.loads((version_dir / "assets.extra" / "model_card.json").read_text())
    assert card["preset"] == "seed-best" and card["config"]["train"]["epochs"] == 2
    assert card["config"]["train"]["label_smoothing"] == 0.1
    assert card["dataset"]["train_images"] == 2000 and card["dataset"]["val_images"] == 500
    low, high = card["metrics"]["test_accuracy_ci95"]
    assert low < card["metrics"]["test_accuracy"] < high
    assert card["metrics"]["test_accuracy"] > 0.85
    assert f"test accuracy: {100 * card['metrics']['test_accuracy']:.2f}%" in result.stdout
    (run_dir,) = (tmp_path / "reports").iterdir()
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "confusion_matrix.png", "curves.png", "history.json", "misclassified.png", "model_card.json",
    ]
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["val_accuracy"]) == 2 and history["best_epoch"] in (1, 2)


def test_reproduce_seed_quick_writes_the_table(tmp_path, mnist_data, capsys):
    code = main(["reproduce-seed", "--quick", "--only", "seed-dense50", "--data-dir",
                 str(Path(mnist_data.source).parent), "--reports-dir", str(tmp_path)])
    assert code == 0
    table = (tmp_path / "reproduce_seed_quick.md").read_text()
    (row,) = [line for line in table.splitlines() if line.startswith("| seed-dense50")]
    assert "| 313,230 | 98.52% |" in row and "| 1 / 1 |" in row


def test_training_flags_override_the_preset():
    args = build_parser().parse_args(
        ["train", "--preset", "best", "--label-smoothing", "0.1", "--weight-decay", "0.05", "--epochs", "3",
         "--clean-epochs", "1"]
    )
    preset = preset_from_args(args)
    assert preset.train.clean_epochs == 1
    assert (preset.train.label_smoothing, preset.train.weight_decay) == (0.1, 0.05)
    assert preset.train.optimizer == "adamw" and preset.train.epochs == 3
    assert preset.train.learning_rate == PRESETS["best"].train.learning_rate  # the rest untouched
    plain = preset_from_args(build_parser().parse_args(["train", "--preset", "best"]))
    assert plain == PRESETS["best"]


def test_a_named_augmentation_replaces_the_presets():
    argv = ["train", "--preset", "resnet", "--augment-policy", "shift-rotate-crop-grid"]
    assert preset_from_args(build_parser().parse_args(argv)).train.augment_policy == "shift-rotate-crop-grid"
    resnet = preset_from_args(build_parser().parse_args(["train", "--preset", "resnet"]))
    assert resnet.train.augment_policy == PRESETS["resnet"].train.augment_policy


def test_layer_defaults_change_only_the_network_layers():
    argv = ["train", "--preset", "resnet", "--layer-defaults", "keras"]
    preset = preset_from_args(build_parser().parse_args(argv))
    assert preset.model.layer_defaults == "keras"
    assert preset == PRESETS["resnet"].with_model(layer_defaults="keras")
    assert PRESETS["resnet"].model.layer_defaults == "pytorch"  # validation chose them for Doucet's recipe


def test_augmentor_crops_change_only_the_crop_of_any_preset():
    crops = {"centre_crop": 24, "train_crop": 25, "crop_interpolation": "bicubic"}
    for name in ("resnet", "best"):  # resnet's own centre crop replaced; best, which has none, given one
        preset = preset_from_args(build_parser().parse_args(["train", "--preset", name, "--augmentor-crops"]))
        assert preset == PRESETS[name].with_model(**crops)
    assert PRESETS["best"].model.centre_crop == 0  # the named preset itself is untouched


@pytest.mark.parametrize(
    ("argv", "clean_epochs"),
    [
        (["--preset", "best"], 5),  # the last sixth of its 30 epochs, chosen on validation
        (["--preset", "best", "--epochs", "12"], 2),  # a shortened run finishes clean for its last sixth too
        (["--preset", "best", "--epochs", "1"], 0),  # one epoch: it stays augmented
        (["--preset", "best", "--clean-epochs", "0"], 0),
        (["--preset", "ensemble"], 5),
        (["--preset", "best", "--dataset", "fashion_mnist"], 0),  # Fashion's recipe was chosen without one
        (["--preset", "best", "--dataset", "fashion_mnist", "--clean-epochs", "3"], 3),
        (["--preset", "fast"], 0),
    ],
)
def test_the_clean_finish_is_the_presets_share_of_the_epochs_on_digits(argv, clean_epochs):
    assert preset_from_args(build_parser().parse_args(["train", *argv])).train.clean_epochs == clean_epochs


def test_the_cli_starts_without_keras_or_tensorflow():
    """`digits-train --help` and `data` answer at once: Keras and TensorFlow load only for a command that
    needs them."""
    code = "import sys, trainer.cli; print(sorted({'keras', 'tensorflow'} & set(sys.modules)))"
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.strip() == "[]"


TINY_RUN = ["train", "--preset", "seed-best", "--epochs", "1", "--limit-train", "300", "--val-size", "100"]


def test_a_report_that_cannot_be_written_loses_no_model(tmp_path, mnist_data, monkeypatch, capsys):
    import trainer.report

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trainer.report, "write_run_report", full_disk)
    folders = ["--models-dir", str(tmp_path / "models"), "--reports-dir", str(tmp_path / "reports")]
    with pytest.raises(OSError, match="No space left"):
        main([*TINY_RUN, *folders])
    version_dir = tmp_path / "models" / "mnist" / "1"
    assert (version_dir / "saved_model.pb").is_file()
    card = json.loads((version_dir / "assets.extra" / "model_card.json").read_text())
    assert card["metrics"]["test_errors"] > 0 and Path(card["report_dir"]).parent == tmp_path / "reports"
    assert f"the model is exported to {version_dir}" in capsys.readouterr().err


def test_an_install_that_cannot_finish_a_run_fails_before_the_fit(tmp_path, mnist_data, monkeypatch):
    import trainer.train

    fits = []
    monkeypatch.setattr(trainer.train, "train_model", lambda *args, **kwargs: fits.append(args))
    monkeypatch.setitem(sys.modules, "trainer.report", None)  # as if the file were broken on disk
    with pytest.raises(ImportError, match="trainer.report"):
        main([*TINY_RUN, "--models-dir", str(tmp_path / "models")])
    assert fits == [] and not (tmp_path / "models").exists()


def test_a_report_folder_that_cannot_be_made_loses_no_model(tmp_path, mnist_data, monkeypatch, capsys):
    import trainer.report

    def gone_bad(reports_dir, label):  # usable when checked before the fit, not at its end
        raise NotADirectoryError(20, "Not a directory", str(reports_dir))

    monkeypatch.setattr(trainer.report, "new_run_dir", gone_bad)
    folders = ["--models-dir", str(tmp_path / "models"), "--reports-dir", str(tmp_path / "reports")]
    assert main([*TINY_RUN, *folders]) == 1
    version_dir = tmp_path / "models" / "mnist" / "1"
    assert (version_dir / "saved_model.pb").is_file()
    card = json.loads((version_dir / "assets.extra" / "model_card.json").read_text())
    assert card["report_dir"] is None and card["metrics"]["test_errors"] > 0
    out, err = capsys.readouterr()
    assert f"exported: {version_dir}" in out and "test accuracy:" in out
    assert f"the model is exported to {version_dir}, but no report folder could be created" in err
    assert "Not a directory" in err
