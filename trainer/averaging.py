"""Weight averaging: an exponential moving average (EMA) of the network's weights, kept beside training.

The average covers every floating-point weight, batch-norm statistics included, and is updated after
each batch with decay min(decay, (1 + t) / (10 + t)) at step t, so the first steps are not dominated by
the initialisation. Training always steps the raw weights; the average is what gets validated, chosen
and exported.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


class WeightAverage(keras.callbacks.Callback):
    """Keep an EMA of `network`'s weights; lend it to the network between epochs, keep it at the end.

    At the end of each epoch the averaged weights replace the network's, so the callbacks after this one
    (the validation that logs trainer.train.AVERAGED_VAL, KeepBestEpoch) see the averaged network. The
    training weights come back when the next epoch begins; after the last epoch the average stays.
    """

    def __init__(self, network: keras.Model, decay: float) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"weight-average decay must be between 0 and 1 (exclusive), got {decay}")
        self.network, self.decay = network, decay
        self._weights = [w for w in network.weights if np.issubdtype(np.dtype(w.dtype), np.floating)]
        self._average: list[tf.Variable] = []
        self._step: tf.Variable | None = None
        self._training: list[np.ndarray] | None = None  # raw weights while the average is lent out

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._average = [tf.Variable(w.numpy(), trainable=False) for w in self._weights]
        self._step = tf.Variable(0.0, trainable=False)

    @tf.function
    def _update(self) -> None:
        self._step.assign_add(1.0)
        decay = tf.minimum(self.decay, (1.0 + self._step) / (10.0 + self._step))
        for average, weight in zip(self._average, self._weights, strict=True):
            average.assign(decay * average + (1.0 - decay) * tf.convert_to_tensor(weight))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._update()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._training = [w.numpy() for w in self._weights]
        self._assign([average.numpy() for average in self._average])

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._training is not None:
            self._assign(self._training)
            self._training = None

    def _assign(self, values: list[np.ndarray]) -> None:
        for weight, value in zip(self._weights, values, strict=True):
            weight.assign(value)
