"""digits-eval: evaluate a served model on a labelled test set over gRPC or REST.

Prints accuracy (95% Wilson interval), errors, per-class precision/recall/F1, the confusion matrix,
request latency p50/p95/p99 and throughput; writes report.json, report.md, confusion_matrix.png and
misclassified.png into --report. `--compare V1 V2` evaluates two versions on the same images and runs
McNemar's exact test on their disagreements.

Exit codes: 0 done, 2 bad arguments or data (also data that does not fit the model's input, or
requests the server refuses, e.g. a batch over its limit, a --target or proxy setting that is not a valid
address, or a --report folder that cannot be written),
3 model server unreachable, 4 model/version/label not served, 1 any other server error, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable
from pathlib import Path

from client import contract
from client.arguments import checked
from client.datasets import (
    SPLITS,
    DataError,
    LabelledImages,
    default_data_dir,
    load_image_folder,
    load_named,
    load_npz,
)
from client.errors import (
    BadTarget,
    ClientError,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    ServerUnavailable,
)
from client.eval_report import comparison_verdict, console_text, report_dict, write_comparison, write_report
from client.evaluation import ProgressBar, predict_all, score
from client.model_client import ClientConfig, ModelClient, connect
from client.stats import mcnemar_exact

EXIT_OK, EXIT_SERVER_ERROR, EXIT_BAD_INPUT, EXIT_UNREACHABLE, EXIT_NOT_FOUND = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130


_positive_seconds = checked(
    float, lambda v: math.isfinite(v) and v > 0, "must be a positive number of seconds"
)


def build_parser() -> argparse.ArgumentParser:
    """The flags of `digits-eval`."""
    p = argparse.ArgumentParser(
        prog="digits-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--target", default=f"localhost:{contract.GRPC_PORT}", help="host:port (default %(default)s)"
    )
    p.add_argument("--protocol", choices=("grpc", "rest"), default="grpc", help="default %(default)s")
    p.add_argument("--model-name", default=contract.DEFAULT_MODEL_NAME, help="default %(default)s")
    p.add_argument(
        "--dataset",
        choices=sorted(contract.CLASS_NAMES),
        default="mnist",
        help="which data (and class names): <data-dir>/<dataset>.npz unless --npz/--images",
    )
    p.add_argument("--split", choices=SPLITS, default="test", help="default %(default)s")
    p.add_argument("--data-dir", type=Path, default=None, help="default $DIGITS_DATA_DIR or ./data")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--npz", type=Path, help="an .npz in the Keras mnist.npz layout (x_test, y_test, ...)"
    )
    source.add_argument("--images", type=Path, help="a folder of pictures (needs --labels)")
    p.add_argument("--labels", type=Path, help="CSV of filename,label rows for --images")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    p.add_argument("--batch-size", type=int, default=256, help="images per request (default %(default)s)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (default %(default)s)")
    version = p.add_mutually_exclusive_group()
    version.add_argument("--model-version", type=int, help="a specific version (default: the newest)")
    version.add_argument("--version-label", help="a version label such as stable or canary")
    version.add_argument(
        "--compare",
        type=int,
        nargs=2,
        metavar=("V1", "V2"),
        help="evaluate two versions on the same images; McNemar's exact test",
    )
    p.add_argument(
        "--timeout", type=_positive_seconds, default=30.0, help="seconds per request (default %(default)s)"
    )
    p.add_argument(
        "--report", type=Path, default=Path("reports/eval"), help="output folder (default %(default)s)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Evaluate; returns the exit code (130 on Ctrl-C, as the shell's, with a line instead of a traceback)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return _fail(EXIT_INTERRUPTED, "interrupted")


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.images is None) != (args.labels is None):
        parser.error("--images and --labels go together")
    if args.compare and args.compare[0] == args.compare[1]:
        parser.error(f"--compare needs two different versions, not {args.compare[0]} twice")
    for name in ("batch_size", "concurrency", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        data = _load_data(args)
    except DataError as err:
        return _fail(EXIT_BAD_INPUT, str(err))
    try:  # before the evaluation, not after it: an unusable --report would lose the results
        args.report.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return _fail(EXIT_BAD_INPUT, f"cannot create the report folder {args.report}: {err}")
    config = ClientConfig(
        target=args.target, protocol=args.protocol, model_name=args.model_name,
        model_version=args.model_version, version_label=args.version_label,
        timeout_s=args.timeout, batch_size=args.batch_size, pool_size=args.concurrency,
    )  # fmt: skip
    try:
        with connect(config) as client:
            versions = args.compare or [args.model_version]
            served = [_check_model_input(client, version) for version in versions]
            reports = [
                _evaluate(client, data, args, version, served_version, len(versions) > 1)
                for version, served_version in zip(versions, served, strict=True)
            ]
    except (DataError, BadTarget) as err:
        return _fail(EXIT_BAD_INPUT, str(err))
    except ServerUnavailable as err:
        return _fail(
            EXIT_UNREACHABLE, f"cannot reach the model server at {args.target} ({args.protocol}): {err}"
        )
    except DeadlineExceeded as err:
        return _fail(EXIT_UNREACHABLE, f"the model server at {args.target} did not answer in time: {err}")
    except ModelNotFound as err:
        return _fail(EXIT_NOT_FOUND, f"model {args.model_name!r} not served as asked: {err}")
    except InvalidInput as err:
        capped = "batch size" in str(err)
        hint = " (the server caps its batch size: try a smaller --batch-size)" if capped else ""
        return _fail(EXIT_BAD_INPUT, f"the model server refused the request: {err}{hint}")
    except ClientError as err:
        return _fail(EXIT_SERVER_ERROR, f"the model server failed the request: {err}")
    written = all(saved for _, _, saved in reports)
    if args.compare:
        (first, first_correct, _), (second, second_correct, _) = reports
        test = mcnemar_exact(first_correct, second_correct)
        print(f"\n{comparison_verdict(first, second, test)}")
        written = _save(args.report, lambda: write_comparison(args.report, first, second, test)) and written
    if not written:
        return EXIT_BAD_INPUT
    print(f"\nreport: {args.report}/report.md")
    return EXIT_OK


def _load_data(args: argparse.Namespace) -> LabelledImages:
    names = contract.CLASS_NAMES[args.dataset]
    if args.npz:
        data = load_npz(args.npz, args.split, names)
    elif args.images:
        reading = ProgressBar(f"reading {args.images}", unit="pictures")
        try:
            data = load_image_folder(args.images, args.labels, names, progress=reading, limit=args.limit)
        finally:
            reading.close()
    else:
        data = load_named(args.dataset, args.split, args.data_dir or default_data_dir())
    return data.head(args.limit)


def _check_model_input(client: ModelClient, version: int | None) -> int | None:
    """Refuse early, with a clear message, when the served signature cannot take our images.

    Returns the version the server resolved (REST predict answers do not say which one answered).
    """
    meta = client.metadata(version=version) if version is not None else client.metadata()
    spec = meta.inputs.get(contract.INPUT_NAME)
    if spec is None or len(meta.inputs) != 1:
        raise DataError(
            f"the model's {meta.signature_name!r} signature takes inputs {sorted(meta.inputs)}, "
            f"not one {contract.INPUT_NAME!r} tensor"
        )
    wanted = f"DT_{contract.INPUT_DTYPE.upper()}"
    side = contract.IMAGE_SIZE
    fits = spec.shape is None or (len(spec.shape) == 3 and all(d in (-1, side) for d in spec.shape[1:]))
    if spec.dtype != wanted or not fits:
        raise DataError(
            f"the data does not match the model's input: model v{meta.model_version} wants "
            f"{spec.dtype} {list(spec.shape or [])}, the data is {wanted} [N, {side}, {side}]"
        )
    missing = {contract.OUTPUT_PROBABILITIES, contract.OUTPUT_CLASSES} - set(meta.outputs)
    if missing:
        raise DataError(f"the model's signature lacks the outputs {sorted(missing)}")
    return meta.model_version


def _evaluate(client: ModelClient, data: LabelledImages, args: argparse.Namespace, version, served, nested):
    """Evaluate one version; print and write its report. Returns (report, per-image correctness, written).

    Every request asks for the version the metadata check resolved (`served`), so a newer version
    loaded part way through cannot answer some of the images.
    """
    label = f"v{version}" if version is not None else (args.version_label or "latest")
    pinned = version if version is not None or served is None else served
    # One untimed request first: connection set-up and the server's first run at this batch size
    # are not what the latency percentiles should measure.
    client.predict(data.images[: args.batch_size], version=pinned)
    progress = ProgressBar(f"{args.model_name} {label}")
    try:
        run = predict_all(client, data.images, args.batch_size, args.concurrency, version=pinned,
                          progress=progress)  # fmt: skip
    finally:
        progress.close()  # a run that failed part way: its error starts on a line of its own
    if run.model_version is None:
        run = dataclasses.replace(run, model_version=served)
    try:
        scores = score(run, data)
    except ValueError as err:
        raise DataError(str(err)) from None
    setup = {
        "target": args.target, "protocol": args.protocol, "batch_size": args.batch_size,
        "concurrency": args.concurrency, "dataset": args.dataset,
    }  # fmt: skip
    folder = args.report / f"v{run.model_version}" if nested else args.report
    report = report_dict(scores, run, data, setup)
    print(console_text(report, data.class_names))  # first: the results survive a failed write
    written = _save(folder, lambda: write_report(folder, scores, run, data, setup))
    return report, run.classes == data.labels, written


def _save(folder: Path, write: Callable[[], object]) -> bool:
    """Run `write`; when the files cannot be written, say so instead of a traceback."""
    try:
        write()
    except OSError as err:
        print(f"digits-eval: error: cannot write the report into {folder}: {err}", file=sys.stderr)
        return False
    return True


def _fail(code: int, message: str) -> int:
    print(f"digits-eval: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
