"""A trained network whose export fails (a full disk) is kept; the same command again exports it untrained."""

from __future__ import annotations

import json

import pytest

from client.contract import DEFAULT_MODEL_NAME
from trainer import export
from trainer.cli import main
from trainer.export import existing_versions, read_model_card
from trainer.member_store import MEMBER_WEIGHTS, MEMBERS_FOLDER, UNEXPORTED_FOLDER, MemberStore
from trainer.precision import processor

TINY = ["train", "--preset", "seed-best", "--epochs", "1", "--limit-train", "300", "--val-size", "100"]


class Fits:
    """Stands in for train_model: counts the networks trained, each trained for real."""

    def __init__(self, monkeypatch) -> None:
        import trainer.train

        self.count = 0
        self.real = trainer.train.train_model
        monkeypatch.setattr(trainer.train, "train_model", self)

    def __call__(self, *args, **kwargs):
        self.count += 1
        return self.real(*args, **kwargs)


def full_disk(*args, **kwargs):
    raise OSError(28, "No space left on device")


def folders(tmp_path) -> list[str]:
    return ["--models-dir", str(tmp_path / "models"), "--reports-dir", str(tmp_path / "reports")]


def kept_networks(tmp_path) -> list:
    return sorted((tmp_path / "models" / UNEXPORTED_FOLDER).glob("*/seed-*"))


def fail_export(tmp_path, monkeypatch, argv: list[str]) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(export, "write_warmup_requests", full_disk)  # half-way through the export
        with pytest.raises(OSError, match="No space left"):
            main([*argv, *folders(tmp_path)])


def test_the_same_command_again_exports_the_kept_network_without_training(
    tmp_path, mnist_data, monkeypatch, capsys
):
    fits = Fits(monkeypatch)
    fail_export(tmp_path, monkeypatch, TINY)
    assert fits.count == 1
    assert existing_versions(tmp_path / "models" / DEFAULT_MODEL_NAME) == []
    (kept,) = kept_networks(tmp_path)
    assert kept.name == "seed-42" and (kept / MEMBER_WEIGHTS).is_file()
    err = capsys.readouterr().err
    assert "the export failed (OSError: [Errno 28] No space left on device)" in err
    assert f"the trained network is kept in {kept}: run the same command again" in err
    trained_errors = json.loads((kept / "member.json").read_text())["test_errors"]

    assert main([*TINY, *folders(tmp_path)]) == 0
    assert fits.count == 1  # nothing trained: the kept network is exported
    assert f"exporting the network an earlier run trained but could not export, from {kept}" in (
        capsys.readouterr().out
    )
    card = read_model_card(tmp_path / "models" / DEFAULT_MODEL_NAME / "1")
    assert card["metrics"]["test_errors"] == trained_errors and card["config"]["train"]["seed"] == 42
    assert card["processor"] == processor()  # the one that trained it, kept with it
    assert not (tmp_path / "models" / UNEXPORTED_FOLDER).exists()  # exported, so no longer kept

    assert main([*TINY, *folders(tmp_path)]) == 0  # a later run trains, as a run always has
    assert fits.count == 2
    assert existing_versions(tmp_path / "models" / DEFAULT_MODEL_NAME) == [1, 2]


def test_another_seed_does_not_take_the_kept_network(tmp_path, mnist_data, monkeypatch, capsys):
    fits = Fits(monkeypatch)
    fail_export(tmp_path, monkeypatch, TINY)
    assert main([*TINY, "--seed", "7", *folders(tmp_path)]) == 0
    assert fits.count == 2
    assert [path.name for path in kept_networks(tmp_path)] == ["seed-42"]  # still waiting for its command


def test_a_kept_network_that_fails_again_stays_kept(tmp_path, mnist_data, monkeypatch, capsys):
    fits = Fits(monkeypatch)
    fail_export(tmp_path, monkeypatch, TINY)
    (kept,) = kept_networks(tmp_path)
    capsys.readouterr()
    fail_export(tmp_path, monkeypatch, TINY)
    assert fits.count == 1
    assert kept_networks(tmp_path) == [kept]
    assert f"kept in {kept}: run the same command again" in capsys.readouterr().err


def test_a_damaged_kept_network_is_trained_anew(tmp_path, mnist_data, monkeypatch, capsys):
    fits = Fits(monkeypatch)
    fail_export(tmp_path, monkeypatch, TINY)
    (kept,) = kept_networks(tmp_path)
    weights = kept / MEMBER_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:5000])  # damaged since it was kept
    capsys.readouterr()

    assert main([*TINY, *folders(tmp_path)]) == 0
    assert fits.count == 2
    assert f"cannot be reused: {kept}" in capsys.readouterr().out
    assert existing_versions(tmp_path / "models" / DEFAULT_MODEL_NAME) == [1]
    assert not (tmp_path / "models" / UNEXPORTED_FOLDER).exists()


def test_a_network_that_cannot_be_kept_either_is_said_so(tmp_path, mnist_data, monkeypatch, capsys):
    import trainer.member_store

    monkeypatch.setattr(trainer.member_store.MemberStore, "save", full_disk)
    fail_export(tmp_path, monkeypatch, TINY)
    err = capsys.readouterr().err
    assert "the export failed (OSError" in err and "the trained network could not be kept either" in err


def test_an_ensemble_whose_export_fails_says_its_members_are_kept(tmp_path, mnist_data, monkeypatch, capsys):
    fail_export(tmp_path, monkeypatch, [*TINY, "--members", "2"])
    members = tmp_path / "models" / MEMBERS_FOLDER
    assert f"the members are kept in {members}: run the same command again" in capsys.readouterr().err
    assert len(list(members.glob("*/seed-*"))) == 2
    assert not (tmp_path / "models" / UNEXPORTED_FOLDER).exists()


def test_a_kept_network_is_exported_once_even_if_its_report_then_fails(tmp_path, mnist_data, monkeypatch):
    import trainer.report

    fits = Fits(monkeypatch)
    fail_export(tmp_path, monkeypatch, TINY)
    with monkeypatch.context() as patch:
        patch.setattr(trainer.report, "write_run_report", full_disk)
        with pytest.raises(OSError, match="No space left"):
            main([*TINY, *folders(tmp_path)])
    assert existing_versions(tmp_path / "models" / DEFAULT_MODEL_NAME) == [1]
    assert kept_networks(tmp_path) == []  # exported: the next run trains, it exports no second copy
    assert main([*TINY, *folders(tmp_path)]) == 0
    assert fits.count == 2


def test_ctrl_c_while_the_export_is_written_keeps_the_network(tmp_path, mnist_data, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    fits = Fits(monkeypatch)
    with monkeypatch.context() as patch:
        patch.setattr(export, "write_warmup_requests", interrupted)
        assert main([*TINY, *folders(tmp_path)]) == 130
    (kept,) = kept_networks(tmp_path)
    assert f"the export failed (KeyboardInterrupt); the trained network is kept in {kept}" in (
        capsys.readouterr().err
    )
    assert main([*TINY, *folders(tmp_path)]) == 0 and fits.count == 1
    assert existing_versions(tmp_path / "models" / DEFAULT_MODEL_NAME) == [1]


def test_a_run_that_exports_leaves_another_runs_kept_network_alone(tmp_path, mnist_data, monkeypatch):
    """Run B started before run A kept its network; B's own export must not throw A's away."""
    fits = Fits(monkeypatch)
    fail_export(tmp_path, monkeypatch, TINY)  # run A
    (kept,) = kept_networks(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(MemberStore, "load", lambda *args: None)  # B looked before A kept it
        assert main([*TINY, *folders(tmp_path)]) == 0
    assert fits.count == 2 and kept_networks(tmp_path) == [kept]


def test_a_damaged_network_is_not_passed_off_as_this_one(tmp_path, mnist_data, monkeypatch, capsys):
    import keras

    fail_export(tmp_path, monkeypatch, TINY)
    (kept,) = kept_networks(tmp_path)
    weights = kept / MEMBER_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:5000])
    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(keras.Model, "save_weights", full_disk)  # no room for this run's network either
        fail_export(tmp_path, monkeypatch, TINY)
    err = capsys.readouterr().err
    assert "the trained network could not be kept either ([Errno 28] No space left on device)" in err
    assert "kept in" not in err


def test_a_failure_while_keeping_the_network_does_not_hide_the_exports_error(
    tmp_path, mnist_data, monkeypatch, capsys
):
    def broken(*args, **kwargs):
        raise RuntimeError("h5 writer broke")

    monkeypatch.setattr(MemberStore, "save", broken)
    fail_export(tmp_path, monkeypatch, TINY)  # the export's OSError is what is raised
    err = capsys.readouterr().err
    assert "the export failed (OSError: [Errno 28] No space left on device); then keeping what it needs " \
        "failed too (RuntimeError: h5 writer broke)" in err
