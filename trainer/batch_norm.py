"""Batch normalisation through TensorFlow's fused kernel: Keras' layer, fewer and larger ops on a CPU."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="digits")
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras' BatchNormalization, computed by TensorFlow's FusedBatchNormV3 where that applies.

    Keras 3 builds batch norm from a dozen small ops (moments, then normalise); on two CPU cores their
    hand-offs cost more than their arithmetic. The fused kernel gives the same outputs to float rounding,
    and this layer keeps Keras' variables and moving averages (of the biased batch variance, as Keras
    does), so weights move freely between the two. It applies on the TensorFlow backend to float32
    inputs of rank 2 or 4 normalised over the last axis, with no mask, renorm or synchronisation; in
    every other case (the JAX backend of the GPU check among them) Keras' own code runs. The class keeps
    Keras' name, so weights files name its variables as they always did.
    """

    def _fuses(self, inputs, mask) -> bool:
        rank = len(inputs.shape)
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and rank in (2, 4)
            and self.axis in (-1, rank - 1)
            and keras.backend.standardize_dtype(inputs.dtype) == "float32"
            and self.scale
            and self.center
            and not self.renorm
            and not self.synchronized
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fuses(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        images = inputs if len(inputs.shape) == 4 else inputs[:, None, None, :]  # [N,C] -> [N,1,1,C]
        if training and self.trainable:
            empty = tf.constant([], tf.float32)
            outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=images, scale=self.gamma, offset=self.beta, mean=empty, variance=empty,
                epsilon=self.epsilon, is_training=True,
            )
            count = tf.cast(tf.size(images) // tf.shape(images)[-1], tf.float32)
            variance = variance * (count - 1.0) / count  # reported unbiased; Keras keeps the biased one
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
            )
        else:
            outputs, *_ = tf.raw_ops.FusedBatchNormV3(
                x=images, scale=self.gamma, offset=self.beta, mean=self.moving_mean,
                variance=self.moving_variance, epsilon=self.epsilon, is_training=False,
            )
        return outputs if len(inputs.shape) == 4 else outputs[:, 0, 0, :]
