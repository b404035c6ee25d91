"""Learning-rate schedules: one-cycle (linear warm-up, cosine decay) and per-epoch exponential decay."""

from __future__ import annotations

import math

import keras

from trainer.presets import TrainConfig

SCHEDULES = ("constant", "onecycle", "exponential")
WARMUP_FRACTION = 0.25  # share of the steps spent rising to the peak rate
START_FRACTION = 0.1  # the warm-up starts at this fraction of the peak rate


@keras.saving.register_keras_serializable(package="digits")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Rise linearly from START_FRACTION*peak to peak, then fall along a cosine to 0 at total_steps."""

    def __init__(self, peak: float, total_steps: int, warmup_fraction: float = WARMUP_FRACTION) -> None:
        self.peak = float(peak)
        self.total_steps = max(int(total_steps), 1)
        self.warmup_fraction = float(warmup_fraction)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = max(self.total_steps * self.warmup_fraction, 1.0)
        rising = self.peak * (START_FRACTION + (1.0 - START_FRACTION) * step / warmup)
        progress = keras.ops.clip((step - warmup) / max(self.total_steps - warmup, 1.0), 0.0, 1.0)
        falling = self.peak * 0.5 * (1.0 + keras.ops.cos(math.pi * progress))
        return keras.ops.where(step < warmup, rising, falling)

    def get_config(self) -> dict:
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_fraction": self.warmup_fraction}


def learning_rate(cfg: TrainConfig, steps_per_epoch: int | None = None):
    """The float rate or the schedule `cfg` asks for; schedules need the number of steps per epoch."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; known: {', '.join(SCHEDULES)}")
    if cfg.schedule == "constant":
        return cfg.learning_rate
    if not steps_per_epoch:
        raise ValueError(f"the {cfg.schedule} schedule needs steps_per_epoch")
    if cfg.schedule == "onecycle":
        return OneCycle(cfg.learning_rate, steps_per_epoch * cfg.epochs)
    return keras.optimizers.schedules.ExponentialDecay(
        cfg.learning_rate, decay_steps=steps_per_epoch, decay_rate=cfg.lr_decay, staircase=True
    )
