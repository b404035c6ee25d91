"""`digits-eval`'s progress, scores and report files against a scripted model server (no sockets).

The end-to-end runs against `digits-serve` are in test_evaluate.py; here the server's answers are made
up, so that answers a real server rarely gives (short, mixed versions, a failure half way) can be asked
for, and each number checked against a hand count.
"""

from __future__ import annotations

import io
import itertools
import json

import numpy as np
import pytest

import client.evaluate
import client.evaluation
from client import contract
from client.datasets import LabelledImages
from client.errors import ServerError, ServerUnavailable
from client.eval_report import console_text, markdown, report_dict
from client.evaluate import main
from client.evaluation import EvalRun, ProgressBar, predict_all, score
from client.model_client import ClientConfig, ModelClient, ModelMetadata, Prediction, TensorSpec

MNIST = contract.CLASS_NAMES["mnist"]


def digits(labels: list[int]) -> np.ndarray:
    """Images whose first pixel is their label: the scripted server reads the answer from it."""
    images = np.zeros((len(labels), 28, 28), np.uint8)
    images[:, 0, 0] = labels
    return images


class ScriptedServer(ModelClient):
    """A model server whose answers come from a function of (request number, images, version)."""

    def __init__(self, config: ClientConfig, answer=None, served_version: int = 3) -> None:
        super().__init__(config)
        self.answer = answer or (lambda call, images, version: images[:, 0, 0].astype(np.int64))
        self.served_version = served_version
        self.calls: list[tuple[int, int | None]] = []  # (images, version asked)

    def _predict(self, images, version, label):
        self.calls.append((len(images), version))
        out = self.answer(len(self.calls), images, version)
        if isinstance(out, Prediction):
            return out
        return Prediction(np.eye(10, dtype=np.float32)[out], out, self.config.model_name,
                          version if version is not None else self.served_version)  # fmt: skip

    def _status(self, version):
        return []

    def _metadata(self, version, label):
        return ModelMetadata(
            self.config.model_name, self.served_version if version is None else version,
            contract.SIGNATURE_NAME,
            inputs={contract.INPUT_NAME: TensorSpec("DT_UINT8", (-1, 28, 28))},
            outputs={contract.OUTPUT_PROBABILITIES: TensorSpec("DT_FLOAT", (-1, 10)),
                     contract.OUTPUT_CLASSES: TensorSpec("DT_INT64", (-1,))},
        )  # fmt: skip

    def close(self):
        pass


@pytest.fixture
def scripted(monkeypatch):
    """Patch digits-eval to talk to a ScriptedServer; returns a setter for its answers."""
    servers: list[ScriptedServer] = []

    def use(answer=None, served_version: int = 3) -> list[ScriptedServer]:
        def connect(config):
            servers.append(ScriptedServer(config, answer, served_version))
            return servers[-1]

        monkeypatch.setattr(client.evaluate, "connect", connect)
        return servers

    return use


def save_npz(tmp_path, labels: list[int]) -> str:
    path = tmp_path / "data.npz"
    np.savez(path, x_test=digits(labels), y_test=np.array(labels, np.uint8))
    return str(path)


class FakeClock:
    """time.perf_counter for client.evaluation: a second passes at every reading."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# -- progress -------------------------------------------------------------------------------------------


def test_progress_in_a_log_is_a_line_per_tenth_not_a_redraw_per_request(monkeypatch):
    monkeypatch.setattr(client.evaluation.time, "perf_counter", FakeClock())  # a slow run: 1 s a request
    log = io.StringIO()  # not a terminal: a log file, a CI job
    bar = ProgressBar("mnist latest", stream=log)
    for done in range(1, 201):
        bar(done * 50, 10_000)
    text = log.getvalue()
    assert "\r" not in text  # carriage returns make one endless line in a log
    lines = text.splitlines()
    assert len(lines) == 10, lines
    assert lines[0].startswith("mnist latest [###...") and "1000/10000 images" in lines[0]
    assert lines[-1].startswith("mnist latest [" + "#" * 30 + "] 10000/10000 images")
    assert text.endswith("\n")


def test_progress_on_a_terminal_redraws_one_line_and_always_shows_the_end(monkeypatch):
    monkeypatch.setattr(client.evaluation.time, "perf_counter", FakeClock())
    screen = Terminal()
    bar = ProgressBar("v1", stream=screen)
    for done in (256, 512, 600):
        bar(done, 600)
    text = screen.getvalue()
    assert text.count("\r") == 3 and text.count("\n") == 1 and text.endswith("600/600 images, 200 images/s\n")


def test_a_terminal_line_left_open_by_a_failure_is_ended_before_the_error(monkeypatch):
    monkeypatch.setattr(client.evaluation.time, "perf_counter", FakeClock())
    screen = Terminal()
    bar = ProgressBar("v1", stream=screen)
    bar(256, 600)
    bar.close()
    bar.close()  # once is enough
    assert screen.getvalue().endswith("256/600 images, 256 images/s\n") and screen.getvalue().count("\n") == 1


def test_an_evaluation_that_fails_half_way_prints_its_error_on_a_line_of_its_own(scripted, tmp_path, capsys):
    def answer(call, images, version):
        if call >= 3:  # the warm-up, the first request, then the server goes away (retries too)
            raise ServerUnavailable("connection refused")
        return images[:, 0, 0].astype(np.int64)

    scripted(answer)
    code = main(["--npz", save_npz(tmp_path, [1, 2, 3, 4] * 3), "--batch-size", "4", "--concurrency", "1",
                 "--report", str(tmp_path / "r")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 3, err
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert error_lines, err
    assert all(line.startswith("digits-eval: error: cannot reach") for line in error_lines), err



def test_reading_a_folder_of_pictures_shows_its_progress(scripted, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "pictures"
    folder.mkdir()
    paper = np.full((84, 84), 255, np.uint8)
    paper[12:72, 36:48] = 0  # a dark 1 on white paper
    for i in range(20):
        Image.fromarray(paper).save(folder / f"{i}.png")
    (tmp_path / "labels.csv").write_text("".join(f"{i}.png,1\n" for i in range(20)))
    scripted()
    code = main(["--images", str(folder), "--labels", str(tmp_path / "labels.csv"),
                 "--report", str(tmp_path / "r")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    reading = [line for line in err.splitlines() if line.startswith(f"reading {folder} [")]
    assert reading and reading[-1].startswith(f"reading {folder} [{'#' * 30}] 20/20 pictures"), err
    assert len(reading) <= 10  # not a line per picture in a log


def test_limit_reads_only_the_first_pictures(scripted, tmp_path, capsys):
    from PIL import Image

    paper = np.full((84, 84), 255, np.uint8)
    paper[12:72, 36:48] = 0
    for i in range(3):
        Image.fromarray(paper).save(tmp_path / f"{i}.png")
    # Thousands of photos and --limit 3: the rows after the third are not opened (here: not there).
    (tmp_path / "labels.csv").write_text("".join(f"{i}.png,1\n" for i in range(1000)))
    scripted()
    code = main(["--images", str(tmp_path), "--labels", str(tmp_path / "labels.csv"), "--limit", "3",
                 "--report", str(tmp_path / "r")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert "3/3 pictures" in err and json.loads((tmp_path / "r" / "report.json").read_text())["images"] == 3


def test_ctrl_c_ends_the_progress_line_and_exits_130_without_a_traceback(scripted, tmp_path, capsys):
    def answer(call, images, version):
        if call == 3:
            raise KeyboardInterrupt
        return images[:, 0, 0].astype(np.int64)

    scripted(answer)
    code = main(["--npz", save_npz(tmp_path, [1, 2, 3, 4] * 3), "--batch-size", "4", "--concurrency", "1",
                 "--report", str(tmp_path / "r")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 130 and err.splitlines()[-1] == "digits-eval: error: interrupted", err

# -- what the server answers ----------------------------------------------------------------------------


def config() -> ClientConfig:
    return ClientConfig("localhost:1", batch_size=4)


def test_answers_missing_rows_are_refused_not_scored():
    short = lambda call, images, version: images[:-1, 0, 0].astype(np.int64)  # noqa: E731
    with pytest.raises(ServerError, match=r"answered 4 images with classes of shape \[3\]"):
        predict_all(ScriptedServer(config(), short), digits([1, 2, 3, 4, 5]), 4, 2)


def test_answers_of_changing_width_are_refused():
    def answer(call, images, version):
        width = 10 if call == 1 else 9
        return Prediction(np.zeros((len(images), width), np.float32), np.zeros(len(images), np.int64), "m", 1)

    with pytest.raises(ServerError, match="answered 9 probabilities per image, 10 before"):
        predict_all(ScriptedServer(config(), answer), digits([1] * 8), 4, 1)


def test_a_version_change_during_the_run_is_refused_not_mixed_into_one_score():
    def answer(call, images, version):
        classes = images[:, 0, 0].astype(np.int64)
        return Prediction(np.eye(10, dtype=np.float32)[classes], classes, "mnist", 1 if call == 1 else 2)

    with pytest.raises(ServerError, match="version 1, then 2"):
        predict_all(ScriptedServer(config(), answer), digits([1] * 8), 4, 1)


def test_every_request_asks_for_the_version_the_metadata_check_resolved(scripted, tmp_path, capsys):
    servers = scripted(served_version=3)
    code = main(["--npz", save_npz(tmp_path, [0, 1, 2, 3, 4, 5]), "--batch-size", "2",
                 "--report", str(tmp_path / "r")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert servers[0].calls == [(2, 3)] * 4  # the warm-up and three requests: all v3, none "the newest"
    assert json.loads((tmp_path / "r" / "report.json").read_text())["model"]["version"] == 3


def test_a_class_outside_the_datas_classes_is_a_clear_error(scripted, tmp_path, capsys):
    def answer(call, images, version):
        classes = np.full(len(images), 12, np.int64)
        return Prediction(np.zeros((len(images), 10), np.float32), classes, "mnist", 3)

    scripted(answer)
    code = main(["--npz", save_npz(tmp_path, [0, 1]), "--report", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "digits-eval: error: the model answers class 12, outside the data's 0..9" in err, err
    assert "Traceback" not in err


def test_compare_refuses_one_version_twice(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--compare", "2", "2"])
    assert done.value.code == 2 and "two different versions" in capsys.readouterr().err


# -- scores and report files ----------------------------------------------------------------------------


def _run(predicted: list[int]) -> EvalRun:
    classes = np.array(predicted, np.int64)
    return EvalRun(classes, np.eye(10, dtype=np.float32)[classes], np.array([0.01]), 1.0, "mnist", 1)


def test_classes_the_data_cannot_score_are_undefined_not_zero():
    # Class 2 has no image (no recall), class 5 is never predicted (no precision), class 7 neither.
    labels = [0, 0, 1, 5]
    data = LabelledImages(digits(labels), np.array(labels), MNIST, "hand-made")
    scores = score(_run([0, 1, 1, 2]), data)
    by_name = {c.name: c for c in scores.per_class}
    assert (by_name["2"].precision, by_name["2"].recall, by_name["2"].f1) == (0.0, None, 0.0)
    assert (by_name["5"].precision, by_name["5"].recall, by_name["5"].f1) == (None, 0.0, 0.0)
    assert (by_name["7"].precision, by_name["7"].recall, by_name["7"].f1) == (None, None, None)
    assert (by_name["1"].precision, by_name["1"].recall) == (0.5, 1.0)
    assert by_name["1"].f1 == pytest.approx(2 / 3)
    report = report_dict(scores, _run([0, 1, 1, 2]), data, _setup())
    json.loads(json.dumps(report, allow_nan=False))  # strict JSON: null, not NaN
    assert report["per_class"][7] == {
        "class": "7", "precision": None, "recall": None, "f1": None, "support": 0
    }
    md = markdown(report, MNIST)
    assert "| 7 | - | - | - | 0 |" in md and "| 5 | - | 0.0000 | 0.0000 | 1 |" in md
    assert "\n`-`: not defined (" in md and "\n-: not defined (" in console_text(report, MNIST)


def _setup() -> dict:
    return {
        "target": "localhost:1", "protocol": "grpc", "batch_size": 4, "concurrency": 1, "dataset": "mnist"
    }


def test_markdown_tables_have_as_many_cells_in_every_row_as_in_their_header():
    labels = list(range(10)) * 3
    data = LabelledImages(digits(labels), np.array(labels), MNIST, "hand-made")
    predicted = [(k + 1) % 10 if i < 4 else k for i, k in enumerate(labels)]
    run = _run(predicted)
    md = markdown(report_dict(score(run, data), run, data, _setup()), MNIST)
    tables, table = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            table.append(line.count("|"))
        elif table:
            tables.append(table)
            table = []
    assert [len(t) for t in tables] == [12, 12]  # header, rule, ten classes; in both tables
    assert all(len(set(t)) == 1 for t in tables), tables
    confusion = [line for line in md.splitlines() if line.startswith("| **0** |")][0]
    assert confusion == "| **0** | 2 | 1 | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 0 |"  # row: true 0; one taken for a 1


@pytest.mark.parametrize("errors", [0, 1])
def test_a_run_with_no_or_one_error_writes_every_report_file(scripted, tmp_path, capsys, errors):
    def answer(call, images, version):
        classes = images[:, 0, 0].astype(np.int64)
        classes[:errors] = (classes[:errors] + 1) % 10
        return classes

    scripted(answer)
    code = main(["--npz", save_npz(tmp_path, [7]), "--report", str(tmp_path / "r")])  # one image
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["images"] == 1 and report["errors"] == errors and report["requests"] == 1
    assert {p.name for p in (tmp_path / "r").iterdir()} == {
        "report.json", "report.md", "confusion_matrix.png", "misclassified.png"
    }


# -- plots ----------------------------------------------------------------------------------------------


@pytest.fixture
def figures(monkeypatch):
    """The figures client.plots draws, kept open for inspection (still written to their files)."""
    import client.plots

    kept = []

    def save(fig, path):
        kept.append(fig)
        fig.savefig(path)
        return path

    monkeypatch.setattr(client.plots, "save_figure", save)
    yield kept
    import matplotlib.pyplot as plt

    for fig in kept:
        plt.close(fig)


def test_the_gallery_shows_each_wrong_image_with_its_own_label_and_prediction(figures, tmp_path):
    from client.plots import plot_misclassified

    labels = np.arange(30) % 10
    predicted = labels.copy()
    predicted[[3, 17, 25]] = [8, 1, 0]
    images = np.zeros((30, 28, 28), np.uint8)
    images[:, 5, 5] = np.arange(30)  # each image tells which it is
    plot_misclassified(images, labels, predicted, MNIST, tmp_path / "m.png")
    axes = figures[0].axes
    assert [ax.get_title() for ax in axes] == ["true: 3\npred: 8", "true: 7\npred: 1", "true: 5\npred: 0"]
    assert [int(ax.get_images()[0].get_array()[5, 5]) for ax in axes] == [3, 17, 25]
    assert figures[0]._suptitle.get_text() == "3 misclassified"
    plot_misclassified(images, labels, predicted, MNIST, tmp_path / "m2.png", limit=2)
    assert len(figures[1].axes) == 2
    assert figures[1]._suptitle.get_text() == "3 misclassified (the first 2 shown)"  # not "3" beside 2 images


def test_the_confusion_plot_has_true_classes_down_and_predictions_across(figures, tmp_path):
    from client.plots import plot_confusion_matrix

    cm = np.zeros((10, 10), np.int64)
    cm[np.arange(10), np.arange(10)] = 50
    cm[4, 9] = 7  # seven 4s taken for 9s
    plot_confusion_matrix(cm, MNIST, tmp_path / "c.png")
    ax = figures[0].axes[0]
    assert (ax.get_ylabel(), ax.get_xlabel()) == ("true", "predicted")
    cell = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cell[(4, 9)] == "7" and cell[(9, 4)] == "0"  # (row on the y axis, column on the x axis)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(MNIST)


def test_gallery_titles_run_into_nothing_even_with_fashion_names(figures, tmp_path):
    from client.plots import plot_misclassified

    names = contract.CLASS_NAMES["fashion_mnist"]
    labels = np.array([9, 6, 0, 9, 2, 5, 4, 7, 8, 1] * 2)  # the longest names, side by side
    predicted = (labels + 2) % 10
    plot_misclassified(np.zeros((20, 28, 28), np.uint8), labels, predicted, names, tmp_path / "m.png")
    fig = figures[0]
    renderer = fig.canvas.get_renderer()
    titles = [ax.title.get_window_extent(renderer) for ax in fig.axes]
    for row in (titles[:10], titles[10:]):
        for left, right in itertools.pairwise(row):
            assert left.x1 <= right.x0, (left, right)
    for above, title in zip(fig.axes[:10], titles[10:], strict=True):  # clear of the picture above
        assert title.y1 <= above.get_window_extent(renderer).y0
    assert max(title.y1 for title in titles[:10]) <= fig._suptitle.get_window_extent(renderer).y0
