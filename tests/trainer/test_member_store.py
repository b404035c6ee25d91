"""An ensemble keeps each member as it finishes; a rerun resumes from them instead of training them again."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from client.contract import DEFAULT_MODEL_NAME, INPUT_NAME, OUTPUT_PROBABILITIES, SIGNATURE_NAME
from trainer import ensemble
from trainer.cli import build_parser, main, preset_from_args
from trainer.ensemble import member_preset
from trainer.export import existing_versions
from trainer.member_store import MEMBER_RECORD, MEMBER_WEIGHTS, MEMBERS_FOLDER, MemberStore
from trainer.model import to_model_input

TINY = ["--preset", "seed-best", "--epochs", "1", "--limit-train", "500", "--val-size", "300"]
LIMIT_TRAIN = 500


class TrainingSpy:
    """Stands in for train_model inside train_ensemble: records the seeds it trains, and can stop
    the run with Ctrl-C when a given number of members have finished."""

    def __init__(self, interrupt_after: int | None = None) -> None:
        self.seeds: list[int] = []
        self.interrupt_after = interrupt_after
        self.real = ensemble.train_model

    def __call__(self, preset, *args, **kwargs):
        if len(self.seeds) == self.interrupt_after:
            raise KeyboardInterrupt
        self.seeds.append(preset.train.seed)
        return self.real(preset, *args, **kwargs)


def train(argv: list[str], spy: TrainingSpy) -> int:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ensemble, "train_model", spy)
        return main(["train", *argv])


def dirs(tmp_path) -> list[str]:
    return ["--models-dir", str(tmp_path / "models"), "--reports-dir", str(tmp_path / "reports")]


def saved_seeds(tmp_path) -> list[str]:
    return sorted(path.name for path in (tmp_path / "models" / MEMBERS_FOLDER).glob("*/seed-*"))


def test_an_interrupted_ensemble_resumes_with_the_members_it_finished(tmp_path, capsys, mnist_data):
    argv = [*TINY, "--members", "3", *dirs(tmp_path)]
    first = TrainingSpy(interrupt_after=2)
    assert train(argv, first) == 130  # Ctrl-C while the third member trains
    assert first.seeds == [42, 43]
    assert saved_seeds(tmp_path) == ["seed-42", "seed-43"]
    assert existing_versions(tmp_path / "models" / DEFAULT_MODEL_NAME) == []
    capsys.readouterr()

    second = TrainingSpy()
    assert train(argv, second) == 0
    assert second.seeds == [44]  # only the member that had not finished
    log = capsys.readouterr().out
    assert "seed 42 reused from" in log and "seed 43 reused from" in log
    assert saved_seeds(tmp_path) == ["seed-42", "seed-43", "seed-44"]

    # The export averages the two kept members and the new one.
    preset = preset_from_args(build_parser().parse_args(["train", *argv]))
    store = MemberStore(tmp_path / "models" / MEMBERS_FOLDER)
    members = [store.load(member_preset(preset, i), mnist_data, LIMIT_TRAIN) for i in range(3)]
    images = mnist_data.x_test[:64]
    expected = np.mean([m.model.predict(to_model_input(images), verbose=0) for m in members], axis=0)
    served = tf.saved_model.load(str(tmp_path / "models" / DEFAULT_MODEL_NAME / "1"))
    got = served.signatures[SIGNATURE_NAME](**{INPUT_NAME: tf.constant(images)})[OUTPUT_PROBABILITIES]
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)

    # Another recipe in the same folder trains its own members; it never takes these.
    other = TrainingSpy()
    assert train([*TINY, "--epochs", "2", "--members", "2", *dirs(tmp_path)], other) == 0
    assert other.seeds == [42, 43]
    assert len(list((tmp_path / "models" / MEMBERS_FOLDER).iterdir())) == 2


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        # A disk that filled up mid-write: half the weights file.
        (lambda folder: (folder / MEMBER_WEIGHTS).write_bytes((folder / MEMBER_WEIGHTS).read_bytes()[:5000]),
         "cannot be reused"),
        (lambda folder: edit_record(folder, lambda r: r.update(test_errors=r["test_errors"] + 1)),
         "its record says"),
        (lambda folder: edit_record(folder, lambda r: r.pop("history")), "KeyError"),
        (lambda folder: (folder / MEMBER_RECORD).write_text("[]"), "not a JSON object"),
    ],
)
def test_a_damaged_member_is_trained_again_and_replaced(tmp_path, capsys, damage, message):
    argv = [*TINY, "--members", "2", *dirs(tmp_path)]
    assert train(argv, TrainingSpy()) == 0
    base = tmp_path / "models" / DEFAULT_MODEL_NAME
    (folder,) = (tmp_path / "models" / MEMBERS_FOLDER).glob("*/seed-43")
    capsys.readouterr()

    damage(folder)
    again = TrainingSpy()
    assert train(argv, again) == 0
    assert again.seeds == [43]  # the damaged member alone is trained again; seed 42 is reused
    log = capsys.readouterr().out
    assert f"seed 43: the saved member cannot be reused: {folder}" in log and message in log
    assert "training it again" in log and f"member replaced in {folder}" in log
    assert existing_versions(base) == [1, 2]
    assert saved_seeds(tmp_path) == ["seed-42", "seed-43"]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp or damaged copy left

    third = TrainingSpy()
    assert train(argv, third) == 0 and third.seeds == []  # the replacement is whole: both reused


def edit_record(folder, edit) -> None:
    record = json.loads((folder / MEMBER_RECORD).read_text())
    edit(record)
    (folder / MEMBER_RECORD).write_text(json.dumps(record))


def test_members_dir_is_refused_for_one_network(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *TINY, "--members-dir", str(tmp_path), *dirs(tmp_path)])
    assert exit_info.value.code == 2


def test_members_saved_before_the_precision_field_are_reused(tmp_path, capsys):
    """A store written before TrainConfig had `precision` (float32 then) still serves a rerun."""
    argv = [*TINY, "--members", "2", *dirs(tmp_path)]
    assert train(argv, TrainingSpy()) == 0
    for record_path in (tmp_path / "models" / MEMBERS_FOLDER).glob(f"*/seed-*/{MEMBER_RECORD}"):
        record = json.loads(record_path.read_text())
        for key in ("requested", "preset"):
            del record[key]["train"]["precision"]  # as the older version wrote it
        record_path.write_text(json.dumps(record))
    capsys.readouterr()
    again = TrainingSpy()
    assert train(argv, again) == 0
    assert again.seeds == [] and capsys.readouterr().out.count("reused from") == 2
    # A bfloat16 recipe is another recipe: it trains its own members.
    bfloat16 = TrainingSpy()
    assert train([*argv, "--precision", "bfloat16"], bfloat16) == 0
    assert bfloat16.seeds == [42, 43]


def test_members_trained_on_other_images_are_kept_apart(tmp_path, mnist_data):
    """Another --limit-train subset, or other arrays under the same dataset name, never share members."""
    from trainer.data import Dataset
    from trainer.presets import get_preset

    store = MemberStore(tmp_path)
    member = member_preset(get_preset("seed-best").with_overrides(members=2), 0)
    relabelled = Dataset("mnist", mnist_data.x_train, (mnist_data.y_train + 1) % 10, mnist_data.x_test,
                         mnist_data.y_test)
    folders = [store.folder(member, data, limit) for data, limit in
               ((mnist_data, 500), (mnist_data, 1000), (mnist_data, None), (relabelled, 500))]
    assert len(set(folders)) == 4
    assert store.folder(member, mnist_data, 500) == folders[0]  # the same recipe and data: the same folder


def test_an_auto_precision_member_is_kept_with_the_precision_it_trained_in(tmp_path, mnist_data, monkeypatch):
    """--precision auto is bfloat16 on some machines, float32 on others: a member trained in one is never
    reused where auto means the other, and shares its folder with the explicit precision it ran in."""
    import trainer.member_store as member_store
    from trainer.presets import get_preset

    store = MemberStore(tmp_path)
    preset = get_preset("seed-best").with_overrides(members=2)
    member = {precision: member_preset(preset.with_overrides(precision=precision), 0)
              for precision in ("auto", "float32", "bfloat16")}
    folders = {}
    for native in ("bfloat16", "float32"):
        real = member_store.resolve_precision
        monkeypatch.setattr(member_store, "resolve_precision",
                            lambda precision, real=real, native=native: native if precision == "auto"
                            else real(precision))
        folders[native] = store.folder(member["auto"], mnist_data, 500)
        assert folders[native] == store.folder(member[native], mnist_data, 500)
    assert folders["bfloat16"] != folders["float32"]
