"""digits-serve: serve SavedModels over TF Serving's gRPC and REST APIs (tensorflow_model_server flags)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from client.contract import DEFAULT_MODEL_NAME, GRPC_PORT, REST_PORT

_CPUS = os.cpu_count() or 1


def _bool(text: str) -> bool:
    """TF Serving's boolean flag values: --flag, --flag=true, --flag=false."""
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "t", "y"):
        return True
    if lowered in ("0", "false", "no", "f", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The flags of tensorflow_model_server that digits-serve honours, plus a few of its own."""
    p = _Parser(prog="digits-serve", description=__doc__, allow_abbrev=False)
    flag = p.add_argument

    def boolean(name: str, default: bool, help_: str) -> None:
        flag(name, type=_bool, nargs="?", const=True, default=default, metavar="BOOL", help=help_)

    flag("--port", type=int, default=GRPC_PORT, help="gRPC port (0: any free port)")
    flag("--grpc_socket_path", help="also serve gRPC on this UNIX domain socket")
    flag("--rest_api_port", type=int, default=REST_PORT, help="REST port (0: REST off, as TF Serving)")
    flag("--host", default="0.0.0.0", help="address to bind both ports to (ours)")
    flag("--model_name", default=DEFAULT_MODEL_NAME, help="model name (without --model_config_file)")
    flag("--model_base_path", help="directory of numbered version subdirectories")
    flag(
        "--model_config_file", help="text-proto ModelServerConfig (overrides --model_name/--model_base_path)"
    )
    flag(
        "--model_config_file_poll_wait_seconds",
        type=float,
        default=0.0,
        help="re-read --model_config_file this often (0: read once)",
    )
    flag(
        "--file_system_poll_wait_seconds",
        type=float,
        default=1.0,
        help="poll base paths for new versions this often (0: once; <0: never)",
    )
    boolean("--enable_batching", False, "merge concurrent requests into batches")
    flag("--batching_parameters_file", help="text-proto BatchingParameters")
    flag("--monitoring_config_file", help="text-proto MonitoringConfig (Prometheus metrics on the REST port)")
    flag("--rest_api_num_threads", type=int, default=4 * _CPUS, help="REST requests processed at once")
    flag(
        "--rest_api_timeout_in_ms",
        type=int,
        default=30000,
        help="REST request timeout (504 beyond; 0: none, as TF Serving)",
    )
    boolean("--rest_api_enable_cors_support", False, "add CORS headers and answer preflight OPTIONS")
    flag(
        "--rest_api_max_body_bytes",
        type=int,
        default=64 * 1024 * 1024,
        help="largest REST request body, also after gzip decompression (413 beyond; ours)",
    )
    flag("--grpc_max_threads", type=int, default=4 * _CPUS, help="gRPC worker threads")
    boolean("--enable_grpc_healthcheck_service", False, "the standard grpc.health.v1 service")
    boolean("--enable_model_warmup", True, "replay assets.extra/tf_serving_warmup_requests before serving")
    flag("--num_request_iterations_for_warmup", type=int, default=1, help="replays per warmup record")
    flag("--saved_model_tags", default="serve", help="comma-separated MetaGraphDef tags to load")
    flag(
        "--tensorflow_intra_op_parallelism",
        type=int,
        default=1,
        help="TF intra-op threads (0: auto; default 1 (ours), each request's ops on its own thread)",
    )
    flag("--tensorflow_inter_op_parallelism", type=int, default=0, help="TF inter-op threads (0: auto)")
    flag(
        "--shutdown_grace_seconds",
        type=float,
        default=30.0,
        help="on SIGTERM, wait this long for in-flight requests (ours)",
    )
    flag(
        "--shutdown_drain_seconds",
        type=float,
        default=1.0,
        help="on SIGTERM, keep answering this long (gRPC health NOT_SERVING) before closing the ports, "
        "so that requests clients already sent are served, not cancelled (ours)",
    )
    return p


def build_config(args: argparse.Namespace):
    """Flags -> ServerConfig; every inconsistency is a ConfigError with a one-line message."""
    from serving.batching import BatchingConfig
    from serving.config_files import (
        DEFAULT_PROMETHEUS_PATH,
        ConfigError,
        read_batching_parameters,
        read_model_server_config,
        read_monitoring_config,
        single_model_config,
    )
    from serving.settings import RestOptions, ServerConfig

    if args.model_config_file:
        model_config = read_model_server_config(args.model_config_file)
    elif args.model_base_path:
        model_config = single_model_config(args.model_name, str(Path(args.model_base_path).resolve()))
    else:
        raise ConfigError("either --model_base_path or --model_config_file must be given")
    for model in model_config.model_config_list.config:
        if not Path(model.base_path).is_dir():
            raise ConfigError(f"base path {model.base_path} of model {model.name} is not a directory")
    if args.batching_parameters_file and not args.enable_batching:
        raise ConfigError("batching_parameters_file is set without setting enable_batching")
    batching = None
    if args.enable_batching:
        params = (
            read_batching_parameters(args.batching_parameters_file) if args.batching_parameters_file else None
        )
        batching = (
            BatchingConfig.from_proto(params, _CPUS)
            if params is not None
            else BatchingConfig(num_batch_threads=_CPUS)
        )
    metrics_path = None
    if args.monitoring_config_file:
        monitoring = read_monitoring_config(args.monitoring_config_file)
        if monitoring.prometheus_config.enable:
            metrics_path = monitoring.prometheus_config.path or DEFAULT_PROMETHEUS_PATH
    if args.port < 0 or args.rest_api_port < 0:
        raise ConfigError("ports must be >= 0")
    for name in ("rest_api_num_threads", "grpc_max_threads", "rest_api_max_body_bytes"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name} must be positive")
    if args.rest_api_timeout_in_ms < 0:
        raise ConfigError("--rest_api_timeout_in_ms must be >= 0 (0: no timeout)")
    return ServerConfig(
        model_config=model_config,
        grpc_port=args.port,
        rest_port=args.rest_api_port or None,
        host=args.host,
        model_config_file=args.model_config_file,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        batching=batching,
        rest=RestOptions(
            num_threads=args.rest_api_num_threads,
            timeout_ms=args.rest_api_timeout_in_ms,
            max_body_bytes=args.rest_api_max_body_bytes,
            enable_cors=args.rest_api_enable_cors_support,
            metrics_path=metrics_path,
        ),
        grpc_max_threads=args.grpc_max_threads,
        enable_grpc_health=args.enable_grpc_healthcheck_service,
        grpc_socket_path=args.grpc_socket_path,
        enable_warmup=args.enable_model_warmup,
        warmup_iterations=args.num_request_iterations_for_warmup,
        saved_model_tags=tuple(t.strip() for t in args.saved_model_tags.split(",") if t.strip()),
        shutdown_grace_seconds=args.shutdown_grace_seconds,
        shutdown_drain_seconds=args.shutdown_drain_seconds,
    )


def main(argv: list[str] | None = None) -> int:
    """Parse flags, load the models, serve until SIGTERM/Ctrl-C; exit 0 after a clean stop."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname).1s %(name)s] %(message)s", stream=sys.stderr
    )
    from serving.config_files import ConfigError

    try:
        config = build_config(args)
    except ConfigError as error:
        print(f"digits-serve: error: {error}", file=sys.stderr)
        return 2
    from serving.server import ModelServer, StartupError, install_signal_handlers  # imports TensorFlow

    if args.tensorflow_intra_op_parallelism or args.tensorflow_inter_op_parallelism:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
        tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    server = ModelServer(config)
    install_signal_handlers(server)
    try:
        server.start()
    except StartupError as error:
        print(f"Failed to start server. Error: {error}", file=sys.stderr)
        return 1
    server.serve_until_stopped()
    return 0


if __name__ == "__main__":
    sys.exit(main())
