"""One client interface for a TF-Serving-compatible model server, with REST and gRPC transports.

    with connect(ClientConfig("localhost:8500", protocol="grpc")) as model:
        result = model.predict(images)          # images: uint8 [N, 28, 28]
        result.probabilities, result.classes    # float32 [N, 10], int64 [N]

The same code talks to the official TF Serving image and to our embedded `digits-serve`.
"""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from client import contract
from client.errors import InvalidInput, ServerUnavailable

PROTOCOLS = ("grpc", "rest")
T = TypeVar("T")


@dataclass(frozen=True)
class ClientConfig:
    """Where the model server is and how to talk to it."""

    target: str  # host:port of the gRPC or REST endpoint
    protocol: str = "grpc"
    model_name: str = contract.DEFAULT_MODEL_NAME
    model_version: int | None = None  # None: the newest available version
    version_label: str | None = None  # e.g. "stable"; exclusive with model_version
    signature_name: str = contract.SIGNATURE_NAME
    timeout_s: float = 10.0
    retries: int = 3  # extra attempts after UNAVAILABLE / 503, with exponential backoff
    backoff_s: float = 0.1
    batch_size: int = 256  # larger inputs are split; serving/config/batching.config caps a request at 256
    pool_size: int = 16  # REST connections kept open (one per concurrent caller)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, not {self.protocol!r}")
        if self.model_version is not None and self.version_label is not None:
            raise ValueError("give a model version or a version label, not both")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if self.retries < 0:
            raise ValueError("retries must be 0 or more")


@dataclass(frozen=True)
class Prediction:
    """The model's answer for a batch of images."""

    probabilities: np.ndarray  # float32 [N, NUM_CLASSES]
    classes: np.ndarray  # int64 [N]
    model_name: str
    model_version: int | None  # None when the transport does not say (REST without a version)

    def __iter__(self) -> Iterator[np.ndarray]:
        """Unpack as `probabilities, classes = model.predict(images)`."""
        return iter((self.probabilities, self.classes))


@dataclass(frozen=True)
class VersionStatus:
    """One entry of GetModelStatus: a version and its lifecycle state."""

    version: int
    state: str  # UNKNOWN, START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str = "OK"
    error_message: str = ""


@dataclass(frozen=True)
class TensorSpec:
    """A signature input or output: dtype name (DT_UINT8, ...) and shape (-1 = any)."""

    dtype: str
    shape: tuple[int, ...] | None  # None: unknown rank


@dataclass(frozen=True)
class ModelMetadata:
    """The served signature of one model version."""

    model_name: str
    model_version: int | None
    signature_name: str
    inputs: dict[str, TensorSpec] = field(default_factory=dict)
    outputs: dict[str, TensorSpec] = field(default_factory=dict)


def available_versions(statuses: list[VersionStatus]) -> list[int]:
    """Versions in state AVAILABLE, newest first."""
    return sorted((s.version for s in statuses if s.state == "AVAILABLE"), reverse=True)


def check_images(images: np.ndarray) -> np.ndarray:
    """Return `images` as C-contiguous uint8 [N, 28, 28], or raise InvalidInput saying what is wrong."""
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[np.newaxis]
    expected = (contract.IMAGE_SIZE, contract.IMAGE_SIZE)
    if images.ndim != 3 or images.shape[1:] != expected:
        wanted = ", ".join(map(str, expected))
        raise InvalidInput(f"images must have shape [N, {wanted}], got {list(images.shape)}")
    if images.shape[0] == 0:
        raise InvalidInput("no images to predict")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.number) or not np.all(np.isfinite(images)):
            raise InvalidInput(f"images must be finite numbers, got dtype {images.dtype}")
        if images.min() < 0 or images.max() > contract.PIXEL_MAX:
            raise InvalidInput(f"pixel values must lie in 0..{contract.PIXEL_MAX}")
        images = np.rint(images).astype(np.uint8)
    return np.ascontiguousarray(images)


class ModelClient(ABC):
    """Predict, status and metadata against one model; one connection reused for every call."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config

    # -- public API ---------------------------------------------------------------------------
    def predict(
        self, images: np.ndarray, *, version: int | None = None, label: str | None = None
    ) -> Prediction:
        """Class probabilities and classes for uint8 images [N, 28, 28], split into batch_size requests."""
        images = check_images(images)
        version, label = self._choose_version(version, label)
        size = self.config.batch_size
        parts = [
            self._with_retries(lambda chunk=images[i : i + size]: self._predict(chunk, version, label))
            for i in range(0, len(images), size)
        ]
        if len(parts) == 1:
            return parts[0]
        return Prediction(
            np.concatenate([p.probabilities for p in parts]),
            np.concatenate([p.classes for p in parts]),
            parts[-1].model_name,
            parts[-1].model_version,
        )

    def status(self, *, version: int | None = None) -> list[VersionStatus]:
        """The lifecycle state of every version the server knows (or of one version)."""
        return self._with_retries(lambda: self._status(version))

    def metadata(self, *, version: int | None = None, label: str | None = None) -> ModelMetadata:
        """The signature the server exposes for this model."""
        version, label = self._choose_version(version, label)
        return self._with_retries(lambda: self._metadata(version, label))

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport hooks ----------------------------------------------------------------------
    @abstractmethod
    def _predict(self, images: np.ndarray, version: int | None, label: str | None) -> Prediction: ...

    @abstractmethod
    def _status(self, version: int | None) -> list[VersionStatus]: ...

    @abstractmethod
    def _metadata(self, version: int | None, label: str | None) -> ModelMetadata: ...

    # -- helpers ------------------------------------------------------------------------------
    def _choose_version(self, version: int | None, label: str | None) -> tuple[int | None, str | None]:
        if version is not None and label is not None:
            raise ValueError("give a model version or a version label, not both")
        if version is None and label is None:
            return self.config.model_version, self.config.version_label
        return version, label

    def _with_retries(self, call: Callable[[], T]) -> T:
        """Run `call`, retrying only when the server is unavailable (exponential backoff with jitter)."""
        for attempt in range(self.config.retries + 1):
            try:
                return call()
            except ServerUnavailable:
                if attempt == self.config.retries:
                    raise
                delay = self.config.backoff_s * (2**attempt)
                time.sleep(delay * (0.5 + random.random()))
        raise AssertionError("unreachable")


def connect(config: ClientConfig) -> ModelClient:
    """A client for `config.protocol`; the gRPC transport (and TensorFlow) is imported only when used."""
    if config.protocol == "grpc":
        from client.grpc_transport import GrpcModelClient

        return GrpcModelClient(config)
    from client.rest_transport import RestModelClient

    return RestModelClient(config)
