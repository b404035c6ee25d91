"""Learning-rate schedules: one-cycle (linear warm-up, cosine decay), exponential decay per epoch, and a
smooth exponential decay whose last epoch anneals the rate to a thousandth."""

from __future__ import annotations

import math

import keras

from trainer.presets import TrainConfig

SCHEDULES = ("constant", "onecycle", "exponential", "exponential-anneal")
WARMUP_FRACTION = 0.25  # share of the steps spent rising to the peak rate
START_FRACTION = 0.1  # the warm-up starts at this fraction of the peak rate
ANNEAL_FLOOR = 1e-3  # the annealing epoch ends at this fraction of the rate it starts from


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


@keras.saving.register_keras_serializable(package="digits")
class DecayThenAnneal(keras.optimizers.schedules.LearningRateSchedule):
    """`peak` times `decay` per epoch, smoothly, for decay_steps; then a cosine down to ANNEAL_FLOOR of
    the rate reached, over anneal_steps (T. Doucet's MNIST schedule)."""

    def __init__(
        self, peak: float, steps_per_epoch: int, decay: float, decay_steps: int, anneal_steps: int
    ) -> None:
        self.peak = float(peak)
        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.decay = float(decay)
        self.decay_steps = int(decay_steps)
        self.anneal_steps = max(int(anneal_steps), 1)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        epochs = keras.ops.minimum(step, float(self.decay_steps)) / self.steps_per_epoch
        decayed = self.peak * keras.ops.exp(epochs * math.log(self.decay))
        progress = keras.ops.clip((step - self.decay_steps) / self.anneal_steps, 0.0, 1.0)
        cosine = 0.5 * (1.0 + keras.ops.cos(math.pi * progress))
        return decayed * (ANNEAL_FLOOR + (1.0 - ANNEAL_FLOOR) * cosine)

    def get_config(self) -> dict:
        return {"peak": self.peak, "steps_per_epoch": self.steps_per_epoch, "decay": self.decay,
                "decay_steps": self.decay_steps, "anneal_steps": self.anneal_steps}


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
    if cfg.schedule == "exponential-anneal":  # the last epoch anneals
        decay_steps = steps_per_epoch * (cfg.epochs - 1)
        return DecayThenAnneal(cfg.learning_rate, steps_per_epoch, cfg.lr_decay, decay_steps, steps_per_epoch)
    return keras.optimizers.schedules.ExponentialDecay(
        cfg.learning_rate, decay_steps=steps_per_epoch, decay_rate=cfg.lr_decay, staircase=True
    )
