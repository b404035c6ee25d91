"""argparse `type=` functions for the command lines (digits-train, digits-eval, bench/): parse and check.

A bad value exits 2 with usage and the reason, as a malformed flag does. Environment variables are read
elsewhere (client/gateway_settings.py): their errors name the variable, and their JSON values (booleans,
2.5 for an integer) need rules of their own. Standard library only: bench/'s client processes import it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def checked(cast: type, ok: Callable[[float], bool], requirement: str) -> Callable[[str], float]:
    """An argparse `type` parsing with `cast` (int or float) that rejects values failing `ok`, saying why."""
    noun = "an integer" if cast is int else "a number"

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{requirement}, got {value}")
        return value

    return parse


positive_int = checked(int, lambda v: v > 0, "must be positive")
positive_float = checked(float, lambda v: math.isfinite(v) and v > 0, "must be a finite number above 0")
non_negative_float = checked(float, lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0")
