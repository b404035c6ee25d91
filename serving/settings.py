"""Typed, frozen server settings (no TensorFlow import, so flag errors are reported fast)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tensorflow_serving.config import model_server_config_pb2

from serving.batching import BatchingConfig

SERVE_TAG = "serve"


@dataclass(frozen=True)
class RestOptions:
    """REST behaviour flags."""

    num_threads: int = 8
    timeout_ms: int = 30000
    max_body_bytes: int = 64 * 1024 * 1024
    enable_cors: bool = False
    metrics_path: str | None = None


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs; the CLI builds it from TF Serving's flags."""

    model_config: model_server_config_pb2.ModelServerConfig = field(compare=False)
    grpc_port: int | None = 8500  # None: no gRPC; 0: any free port
    rest_port: int | None = 8501  # None: no REST; 0: any free port
    host: str = "0.0.0.0"
    model_config_file: str | None = None
    model_config_file_poll_wait_seconds: float = 0.0
    file_system_poll_wait_seconds: float = 1.0
    batching: BatchingConfig | None = None
    rest: RestOptions = RestOptions()
    grpc_max_threads: int = 8
    enable_grpc_health: bool = False
    grpc_socket_path: str | None = None  # also serve gRPC on this UNIX socket
    enable_warmup: bool = True
    warmup_iterations: int = 1
    saved_model_tags: tuple[str, ...] = (SERVE_TAG,)
    shutdown_grace_seconds: float = 30.0
    shutdown_drain_seconds: float = 1.0  # on SIGTERM, keep answering this long before closing the ports
