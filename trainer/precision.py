"""Training precision: float32, or mixed bfloat16 (bfloat16 compute, float32 weights) on CPUs built for it.

Only training uses bfloat16. The network that is validated, scored and exported is a float32 twin that
gets the trained weights copied in (trainer/train.py's `WeightTwin`), so serving never needs bfloat16
kernels. Keras is imported only when a function needs it: the CLI reads `PRECISIONS` at start-up.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PRECISIONS = ("float32", "bfloat16", "auto")
MIXED_POLICY = "mixed_bfloat16"
# CPU flags of native bfloat16 arithmetic (Intel Cooper Lake and later, AMD Zen 4 and later); without
# them TensorFlow emulates bfloat16, slower than float32.
NATIVE_BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")
PROCESSOR_FIELDS = {"name": "model name", "family": "cpu family", "model": "model"}  # the card's: cpuinfo's


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo is not there to read."""
    return frozenset(_first_processor(cpuinfo).get("flags", "").split())


def processor(cpuinfo: Path = CPUINFO) -> dict[str, Any]:
    """Which processor computes here (the same seed trains another network on another one): the
    architecture; name, family and model where /proc/cpuinfo says them; the cores this process may use."""
    fields = _first_processor(cpuinfo)
    described = {key: fields[name] for key, name in PROCESSOR_FIELDS.items() if fields.get(name)}
    return {"architecture": platform.machine(), **described, "cores": usable_cores()}


def shared_processor(processors: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The processor that trained every member; None where they differ or one is unknown."""
    first = processors[0]
    return first if first is not None and all(each == first for each in processors) else None


def usable_cores() -> int:
    """The logical cores this process may run on (its affinity where the OS has one, e.g. a container's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _first_processor(cpuinfo: Path) -> dict[str, str]:
    """The first processor's `key: value` lines of /proc/cpuinfo; empty where it cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the next processor's block: the cores of one machine are alike
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def resolve_precision(precision: str, flags: frozenset[str] | None = None, gpus: int | None = None) -> str:
    """"float32" or "bfloat16": `precision` itself, or what "auto" means on this machine.

    "auto" is bfloat16 only on a CPU-only machine whose CPU computes bfloat16 natively; on a GPU (or any
    accelerator the Keras backend sees), and on other CPUs, float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision
    if gpus is None:
        gpus = accelerator_count()
    flags = cpu_flags() if flags is None else flags
    return "bfloat16" if gpus == 0 and flags & NATIVE_BFLOAT16_FLAGS else "float32"


def accelerator_count() -> int:
    """Accelerators the Keras backend computes on (GPUs; on JAX, TPUs too)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return sum(device.platform != "cpu" for device in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.device_count()
    return 0


@contextlib.contextmanager
def dtype_policy(precision: str) -> Iterator[None]:
    """Layers built inside compute in `precision` ("float32" or "bfloat16"); the global policy is restored."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(MIXED_POLICY if precision == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
