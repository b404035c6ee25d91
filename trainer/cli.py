"""digits-train: fetch the data, train the tutorial's presets and export TF Serving models."""

from __future__ import annotations

import argparse
import sys

from trainer.data import DataError, default_data_dir, prepare_data


def build_parser() -> argparse.ArgumentParser:
    """The digits-train argument parser."""
    parser = argparse.ArgumentParser(prog="digits-train", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="fetch MNIST and Fashion-MNIST into the data dir and verify them")
    data.add_argument("--data-dir", default=str(default_data_dir()), help="default: $DIGITS_DATA_DIR or data")
    data.set_defaults(handler=_cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `digits-train`."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except DataError as exc:
        print(f"digits-train: data error: {exc}", file=sys.stderr)
        return 1


def _cmd_data(args: argparse.Namespace) -> int:
    prepare_data(args.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
