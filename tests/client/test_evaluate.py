"""`digits-eval` end to end against `digits-serve`: numbers, report files, --compare, exit codes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from client.evaluate import main
from client.model_client import ClientConfig, connect
from client.stats import mcnemar_exact, wilson_interval

REPORT_FILES = {"report.json", "report.md", "confusion_matrix.png", "misclassified.png"}


@pytest.fixture(scope="module")
def small_split(tmp_path_factory, test_digits):
    """500 test images as an npz in the Keras mnist.npz layout."""
    path = tmp_path_factory.mktemp("data") / "small.npz"
    np.savez(path, x_test=test_digits[0], y_test=test_digits[1].astype(np.uint8))
    return path


@pytest.fixture(scope="module")
def served_classes(served_model, test_digits):
    """What versions 1 and 2 answer for the 500 images, asked directly."""
    with connect(ClientConfig(served_model.grpc_target)) as model:
        return {v: model.predict(test_digits[0], version=v).classes for v in (1, 2)}


def evaluate(served_model, protocol: str, *args: str) -> int:
    return main(["--target", served_model.target(protocol), "--protocol", protocol, *args])


@pytest.mark.parametrize(
    "protocol, version_args, version", [("grpc", [], 2), ("rest", ["--model-version", "1"], 1)]
)
def test_report_numbers_match_the_servers_answers(
    served_model, small_split, served_classes, test_digits, tmp_path, capsys, protocol, version_args, version
):
    report_dir = tmp_path / "report"
    code = evaluate(served_model, protocol, "--npz", str(small_split), "--batch-size", "64",
                    "--concurrency", "4", "--report", str(report_dir), *version_args)  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert REPORT_FILES <= {p.name for p in report_dir.iterdir()}
    report = json.loads((report_dir / "report.json").read_text())
    labels = test_digits[1]
    correct = int(np.sum(served_classes[version] == labels))
    interval = wilson_interval(correct, len(labels))
    assert report["model"] == {"name": "mnist", "version": version}
    assert report["images"] == 500 and report["errors"] == 500 - correct
    assert report["accuracy"]["value"] == pytest.approx(correct / 500)
    assert report["accuracy"]["ci95_low"] == pytest.approx(interval.low)
    assert report["accuracy"]["ci95_high"] == pytest.approx(interval.high)
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 500 and np.trace(cm) == correct
    assert [c["support"] for c in report["per_class"]] == np.bincount(labels, minlength=10).tolist()
    assert all(0 <= c["f1"] <= 1 for c in report["per_class"])
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
    assert report["requests"] == 8 and report["throughput_images_per_s"] > 0  # ceil(500 / 64) requests
    for picture in ("confusion_matrix.png", "misclassified.png"):
        with Image.open(report_dir / picture) as image:
            assert image.format == "PNG" and image.size[0] > 300
    assert f"accuracy {100 * correct / 500:.2f}%" in out and "confusion matrix" in out
    assert "500/500 images" in err  # the progress bar
    assert "| class | precision | recall | F1 | support |" in (report_dir / "report.md").read_text()


def test_compare_runs_mcnemar_on_the_same_images(
    served_model, small_split, served_classes, test_digits, tmp_path
):
    report_dir = tmp_path / "compare"
    code = evaluate(served_model, "grpc", "--npz", str(small_split), "--compare", "1", "2",
                    "--batch-size", "100", "--report", str(report_dir))  # fmt: skip
    assert code == 0
    report = json.loads((report_dir / "report.json").read_text())
    labels = test_digits[1]
    expected = mcnemar_exact(served_classes[1] == labels, served_classes[2] == labels)
    assert report["mcnemar"]["only_first_correct"] == expected.only_a_correct
    assert report["mcnemar"]["only_second_correct"] == expected.only_b_correct
    assert report["mcnemar"]["p_value"] == pytest.approx(expected.p_value)
    assert ("significantly better" in report["verdict"]) == expected.significant()
    for version in (1, 2):
        assert REPORT_FILES <= {p.name for p in (report_dir / f"v{version}").iterdir()}
    assert "McNemar" in (report_dir / "report.md").read_text()


def test_a_folder_of_pictures_with_a_labels_csv(served_model, test_digits, tmp_path, capsys):
    folder = tmp_path / "pictures"
    folder.mkdir()
    with (tmp_path / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "label"])
        for i in range(20):  # dark ink on white paper, 3x larger: the gateway's preprocessing applies
            picture = 255 - np.kron(test_digits[0][i], np.ones((3, 3), np.uint8))
            Image.fromarray(picture).save(folder / f"digit_{i}.png")
            writer.writerow([f"digit_{i}.png", int(test_digits[1][i])])
    code = evaluate(served_model, "grpc", "--images", str(folder), "--labels", str(tmp_path / "labels.csv"),
                    "--version-label", "stable", "--report", str(tmp_path / "report"))  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["images"] == 20 and report["model"]["version"] == 1
    assert report["accuracy"]["value"] >= 0.8


@pytest.mark.parametrize("header", [True, False])
def test_a_labels_csv_saved_by_excel_with_a_byte_order_mark(test_digits, tmp_path, header):
    """Excel's "CSV UTF-8" starts with a BOM: it is not part of the first file's name (or the header's)."""
    from client.datasets import load_image_folder

    rows = [["filename", "label"]] if header else []
    for i in range(3):
        Image.fromarray(test_digits[0][i]).save(tmp_path / f"{i}.png")
        rows.append([f"{i}.png", str(test_digits[1][i])])
    text = "".join(",".join(row) + "\r\n" for row in rows)
    (tmp_path / "labels.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    images = load_image_folder(tmp_path, tmp_path / "labels.csv", tuple("0123456789"))
    assert images.labels.tolist() == test_digits[1][:3].tolist() and images.images.shape == (3, 28, 28)


def test_named_dataset_from_the_data_dir_with_its_class_names(served_model, tmp_path, monkeypatch, capsys):
    """--dataset reads <data dir>/<name>.npz and reports in that dataset's class names."""
    from client.contract import CLASS_NAMES
    from client.datasets import default_data_dir

    data_dir = default_data_dir().resolve()
    monkeypatch.chdir(tmp_path)  # --data-dir must be honoured, not the working directory
    code = evaluate(served_model, "grpc", "--dataset", "fashion_mnist", "--data-dir", str(data_dir),
                    "--split", "test", "--limit", "100", "--report", "r")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["images"] == 100 and report["dataset"] == "fashion_mnist"
    assert [c["class"] for c in report["per_class"]] == list(CLASS_NAMES["fashion_mnist"])
    assert report["accuracy"]["value"] < 0.5  # a digit model knows nothing about clothes


def bad_npz(tmp_path, name: str, **arrays) -> str:
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    "save, count, offset",
    [(np.savez_compressed, 4, 60), (np.savez, 8, 100)],
    ids=["bad deflate data (zlib.error)", "mangled .npy header (tokenize.TokenError)"],
)
def test_a_damaged_npz_exits_2_with_a_message(tmp_path, unused_port, capsys, save, count, offset):
    path = tmp_path / "damaged.npz"
    save(path, x_test=np.zeros((count, 28, 28), np.uint8), y_test=np.zeros(count, np.uint8))
    with path.open("r+b") as handle:  # 64 bytes overwritten, as a bad disk or a broken copy leaves them
        handle.seek(offset)
        handle.write(b"\xff" * 64)
    code = main(["--protocol", "rest", "--target", f"127.0.0.1:{unused_port}", "--npz", str(path),
                 "--report", str(tmp_path / "r")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err  # the (absent) model server is never asked
    assert err.startswith(f"digits-eval: error: cannot read {path}: the file is damaged"), err
    assert "Traceback" not in err


def test_a_single_npy_array_given_as_npz_exits_2_with_a_message(tmp_path, unused_port, capsys):
    """np.load of a .npy file gives an array, not an archive: a clear error, not a TypeError traceback."""
    path = tmp_path / "images.npz"
    with path.open("wb") as handle:
        np.save(handle, np.zeros((4, 28, 28), np.uint8))
    code = main(["--protocol", "rest", "--target", f"127.0.0.1:{unused_port}", "--npz", str(path),
                 "--report", str(tmp_path / "r")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"cannot read {path}: it holds one array of shape [4, 28, 28] (a .npy file)" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "case, args, code, words",
    [
        ("unknown model", ["--model-name", "letters"], 4, "letters"),
        ("unknown version", ["--model-version", "7"], 4, "7"),
        ("unknown label", ["--version-label", "gold"], 4, "gold"),
        ("images of the wrong size", ["NPZ32"], 2, "[N, 28, 28]"),
        ("npz without the split", ["NPZ_TRAIN_ONLY"], 2, "x_test"),
        ("labels out of range", ["NPZ_BAD_LABELS"], 2, "labels"),
        ("missing data file", ["--npz", "/nonexistent/mnist.npz"], 2, "cannot read"),
    ],
)  # fmt: skip
def test_clear_errors_and_exit_codes(served_model, tmp_path, capsys, case, args, code, words):
    substitutes = {
        "NPZ32": ["--npz", bad_npz(tmp_path, "big.npz", x_test=np.zeros((4, 32, 32), np.uint8),
                                   y_test=np.zeros(4, np.uint8))],
        "NPZ_TRAIN_ONLY": ["--npz", bad_npz(tmp_path, "train.npz", x_train=np.zeros((4, 28, 28), np.uint8),
                                            y_train=np.zeros(4, np.uint8))],
        "NPZ_BAD_LABELS": ["--npz", bad_npz(tmp_path, "labels.npz", x_test=np.zeros((4, 28, 28), np.uint8),
                                            y_test=np.full(4, 12, np.uint8))],
    }  # fmt: skip
    args = [a for arg in args for a in substitutes.get(arg, [arg])]
    if "--npz" not in args:
        args += ["--npz", bad_npz(tmp_path, "ok.npz", x_test=np.zeros((4, 28, 28), np.uint8),
                                  y_test=np.zeros(4, np.uint8))]  # fmt: skip
    assert evaluate(served_model, "grpc", *args, "--report", str(tmp_path / "r")) == code
    err = capsys.readouterr().err
    assert err.startswith("digits-eval: error:") and words in err, err
    assert "Traceback" not in err


def test_unreachable_server_exits_3_with_a_message(unused_port, tmp_path, test_digits):
    np.savez(tmp_path / "d.npz", x_test=test_digits[0][:5], y_test=test_digits[1][:5])
    target = f"127.0.0.1:{unused_port}"
    command = [sys.executable, "-m", "client.evaluate", "--protocol", "rest", "--target", target,
               "--npz", str(tmp_path / "d.npz"), "--report", str(tmp_path / "r")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    assert "cannot reach the model server" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("target", ["localhost:notaport", "ftp://127.0.0.1:1"])
def test_a_target_that_is_not_an_address_exits_2_at_once(tmp_path, capsys, target):
    npz = bad_npz(tmp_path, "ok.npz", x_test=np.zeros((4, 28, 28), np.uint8), y_test=np.zeros(4, np.uint8))
    code = main(["--protocol", "rest", "--target", target, "--npz", npz, "--report", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2, err  # a bad argument, not 3 "cannot reach" after retrying
    assert err.startswith(f"digits-eval: error: the model server address {target!r} is not valid: "), err
    assert "Traceback" not in err


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_a_timeout_that_is_not_positive_is_a_usage_error(capsys, value):
    with pytest.raises(SystemExit) as done:
        main(["--timeout", value])
    assert done.value.code == 2
    assert "argument --timeout: must be a positive number" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_unusable_report_path_is_refused_before_evaluating(tmp_path, unused_port, capsys, where):
    taken = tmp_path / "taken"
    taken.write_text("")
    npz = bad_npz(tmp_path, "ok.npz", x_test=np.zeros((4, 28, 28), np.uint8), y_test=np.zeros(4, np.uint8))
    report = taken if where == "a file" else taken / "report"
    code = main(["--protocol", "rest", "--target", f"127.0.0.1:{unused_port}", "--npz", npz,
                 "--report", str(report)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err  # not 3: the (absent) model server was never asked
    assert err.startswith("digits-eval: error: cannot create the report folder") and "Traceback" not in err


def test_an_unwritable_report_still_prints_the_results(served_model, small_split, tmp_path, capsys):
    (tmp_path / "r" / "report.json").mkdir(parents=True)  # the folder is fine; one file in it cannot be
    code = evaluate(served_model, "grpc", "--npz", str(small_split), "--report", str(tmp_path / "r"))
    out, err = capsys.readouterr()
    assert code == 2
    assert "accuracy " in out and "confusion matrix" in out
    assert "digits-eval: error: cannot write the report into" in err and "Traceback" not in err
