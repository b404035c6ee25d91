"""Evaluation reports: report.json, report.md, confusion_matrix.png, misclassified.png, console text."""

from __future__ import annotations

import json
from pathlib import Path

from client.datasets import LabelledImages
from client.evaluation import EvalRun, Scores
from client.plots import plot_confusion_matrix, plot_misclassified
from client.stats import McNemarResult


def report_dict(scores: Scores, run: EvalRun, data: LabelledImages, setup: dict) -> dict:
    """The machine-readable report of one evaluation."""
    return {
        **setup,
        "model": {"name": run.model_name, "version": run.model_version},
        "data": data.source,
        "images": scores.images,
        "accuracy": {
            "value": scores.accuracy.value,
            "ci95_low": scores.accuracy.low,
            "ci95_high": scores.accuracy.high,
        },
        "errors": scores.errors,
        "per_class": [
            {"class": c.name, "precision": c.precision, "recall": c.recall, "f1": c.f1, "support": c.support}
            for c in scores.per_class
        ],
        "confusion_matrix": scores.confusion.tolist(),
        "latency_ms": scores.latency_ms,
        "requests": len(run.latencies_s),
        "throughput_images_per_s": scores.throughput,
        "wall_s": run.wall_s,
    }


def write_report(folder: Path, scores: Scores, run: EvalRun, data: LabelledImages, setup: dict) -> dict:
    """Write the four report files into `folder`; returns the report dict."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    report = report_dict(scores, run, data, setup)
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / "report.md").write_text(markdown(report, data.class_names))
    title = (
        f"{run.model_name} v{run.model_version if run.model_version is not None else '?'} on {data.source}"
    )
    plot_confusion_matrix(scores.confusion, data.class_names, folder / "confusion_matrix.png", title)
    plot_misclassified(data.images, data.labels, run.classes, data.class_names, folder / "misclassified.png")
    return report


UNDEFINED_NOTE = "-: not defined (precision: nothing predicted as the class; recall: no image of it)"


def _ratio(value: float | None) -> str:
    """A precision, recall or F1 to four places; "-" where the data left it undefined."""
    return "-" if value is None else f"{value:.4f}"


def _any_undefined(report: dict) -> bool:
    return any(c[key] is None for c in report["per_class"] for key in ("precision", "recall", "f1"))


def headline(report: dict) -> str:
    """Accuracy, errors, latency and throughput in a few lines."""
    acc = report["accuracy"]
    lat = report["latency_ms"]
    version = report["model"]["version"]
    return "\n".join(
        [
            f"model {report['model']['name']} v{version if version is not None else '?'}"
            f" over {report['protocol']} at {report['target']}, {report['images']} images ({report['data']})",
            f"accuracy {100 * acc['value']:.2f}%  (95% CI {100 * acc['ci95_low']:.2f}-"
            f"{100 * acc['ci95_high']:.2f}%)  errors {report['errors']}",
            f"latency per request (batch {report['batch_size']}, concurrency {report['concurrency']}): "
            f"p50 {lat['p50']:.1f} ms  p95 {lat['p95']:.1f} ms  p99 {lat['p99']:.1f} ms",
            f"throughput {report['throughput_images_per_s']:,.0f} images/s ({report['wall_s']:.2f} s wall)",
        ]
    )


def console_text(report: dict, class_names: tuple[str, ...]) -> str:
    """What `digits-eval` prints: the headline, per-class scores and the confusion matrix."""
    lines = [headline(report), "", f"{'class':>12} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}"]
    for c in report["per_class"]:
        lines.append(
            f"{c['class']:>12} {_ratio(c['precision']):>9} {_ratio(c['recall']):>7} {_ratio(c['f1']):>7} "
            f"{c['support']:>8}"
        )
    if _any_undefined(report):
        lines.append(UNDEFINED_NOTE)
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    width = max(5, max(len(str(v)) for row in report["confusion_matrix"] for v in row) + 1)
    short = [name[: width - 1] for name in class_names]
    lines.append(" " * 12 + "".join(f"{s:>{width}}" for s in short))
    for name, row in zip(class_names, report["confusion_matrix"], strict=True):
        lines.append(f"{name[:11]:>12}" + "".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


def markdown(report: dict, class_names: tuple[str, ...]) -> str:
    """report.md: the same content as the console, as Markdown tables."""
    acc, lat = report["accuracy"], report["latency_ms"]
    version = report["model"]["version"]
    out = [
        f"# Evaluation of {report['model']['name']} v{version if version is not None else '?'}",
        "",
        f"- data: {report['data']}, {report['images']} images",
        f"- server: {report['target']} over {report['protocol']}; batch size {report['batch_size']},"
        f" concurrency {report['concurrency']}",
        f"- **accuracy {100 * acc['value']:.2f}%** (95% Wilson interval {100 * acc['ci95_low']:.2f}%"
        f" to {100 * acc['ci95_high']:.2f}%), {report['errors']} errors",
        f"- latency per request: p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, p99 {lat['p99']:.1f} ms",
        f"- throughput: {report['throughput_images_per_s']:,.0f} images/s ({report['wall_s']:.2f} s)",
        "",
        "## Per class",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    out += [
        f"| {c['class']} | {_ratio(c['precision'])} | {_ratio(c['recall'])} | {_ratio(c['f1'])} "
        f"| {c['support']} |"
        for c in report["per_class"]
    ]
    if _any_undefined(report):
        out += ["", "`" + UNDEFINED_NOTE.replace(":", "`:", 1)]  # `-`: not defined (...)
    out += ["", "## Confusion matrix (rows: true, columns: predicted)", ""]
    out.append("| | " + " | ".join(class_names) + " |")
    out.append("|---|" + "---:|" * len(class_names))
    for name, row in zip(class_names, report["confusion_matrix"], strict=True):
        out.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + " |")
    out += ["", "![confusion matrix](confusion_matrix.png)", "", "![misclassified](misclassified.png)", ""]
    return "\n".join(out)


def comparison_verdict(a: dict, b: dict, test: McNemarResult, alpha: float = 0.05) -> str:
    """One sentence a user can act on."""
    va, vb = a["model"]["version"], b["model"]["version"]
    diff = 100 * (b["accuracy"]["value"] - a["accuracy"]["value"])
    if not test.significant(alpha):
        return (
            f"no significant difference between v{va} and v{vb} ({diff:+.2f} points for v{vb}, McNemar "
            f"exact p = {test.p_value:.3g}; only v{va} right on {test.only_a_correct}, "
            f"only v{vb} right on {test.only_b_correct})"
        )
    better = vb if test.only_b_correct > test.only_a_correct else va
    return (
        f"v{better} is significantly better ({diff:+.2f} points for v{vb}, McNemar exact p = "
        f"{test.p_value:.3g}; only v{va} right on {test.only_a_correct}, "
        f"only v{vb} right on {test.only_b_correct})"
    )


def write_comparison(folder: Path, a: dict, b: dict, test: McNemarResult) -> dict:
    """Top-level report.json / report.md of `--compare V1 V2` (each version has its own subfolder)."""
    verdict = comparison_verdict(a, b, test)
    report = {
        "compare": [a["model"]["version"], b["model"]["version"]],
        "accuracy": {f"v{r['model']['version']}": r["accuracy"] for r in (a, b)},
        "mcnemar": {
            "only_first_correct": test.only_a_correct,
            "only_second_correct": test.only_b_correct,
            "p_value": test.p_value,
            "significant_at_0.05": test.significant(),
        },
        "verdict": verdict,
        "reports": [f"v{r['model']['version']}/report.json" for r in (a, b)],
    }
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [
        f"| v{r['model']['version']} | {100 * r['accuracy']['value']:.2f}% "
        f"({100 * r['accuracy']['ci95_low']:.2f}-{100 * r['accuracy']['ci95_high']:.2f}) | {r['errors']} | "
        f"[report](v{r['model']['version']}/report.md) |"
        for r in (a, b)
    ]
    text = [
        f"# v{a['model']['version']} vs v{b['model']['version']} on {a['data']}",
        "",
        "| version | accuracy (95% CI) | errors | details |",
        "|---|---|---:|---|",
        *rows,
        "",
        f"**{verdict}.**",
        "",
    ]
    (folder / "report.md").write_text("\n".join(text))
    return report
