"""The model server: model manager + gRPC + REST, started once models load, stopped gracefully."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

from serving.batching import BatchQueue
from serving.config_files import ConfigError, read_model_server_config
from serving.grpc_service import create_grpc_server
from serving.metrics import Metrics
from serving.model_manager import ModelManager
from serving.rest import RestApi, RestServer
from serving.servable import Servable
from serving.settings import ServerConfig
from serving.warmup import run_warmup

log = logging.getLogger("digits-serve")


class StartupError(Exception):
    """The server could not start (models failed to load, ports taken...)."""


class ModelServer:
    """Loads the configured models, then serves them over gRPC and REST until stop()."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.metrics = Metrics()
        self.manager = ModelManager(
            config.model_config,
            self._load_servable,
            config.file_system_poll_wait_seconds,
        )
        # TF Serving's one SharedBatchScheduler: num_batch_threads batches at once over every model.
        self._batch_slots = (
            threading.BoundedSemaphore(max(1, config.batching.num_batch_threads))
            if config.batching is not None
            else None
        )
        self._stop = threading.Event()
        self._grpc = None
        self._health = None
        self._rest: RestServer | None = None
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._config_thread: threading.Thread | None = None

    def _load_servable(self, name: str, version: int, path: Path) -> Servable:
        servable = Servable(name, version, path, self.config.saved_model_tags)
        try:
            servable.load()
        except Exception:
            self.metrics.record_load(str(path), ok=False)
            raise
        self.metrics.record_load(str(path), ok=True)
        if self.config.batching is not None:
            batching = self.config.batching

            def on_batch(size: int, padded: int, queued: list[float]) -> None:
                self.metrics.record_batch(size, padded, queued, batching.thread_pool_name)

            servable.enable_batching(
                lambda run_fn: BatchQueue(
                    run_fn,
                    batching,
                    name=f"batch-{name}-{version}",
                    on_batch=on_batch,
                    slots=self._batch_slots,
                )
            )
        if self.config.enable_warmup:
            try:
                run_warmup(servable, self.config.warmup_iterations, self.metrics)
            except Exception:
                servable.close()
                raise
        return servable

    # --------------------------------------------------------------------------------- lifecycle
    def start(self, ready_timeout_s: float | None = None) -> None:
        """Load the initial models (blocking, as TF Serving does), check their labels, then open the ports.

        A model whose base path is missing or has no version yet is waited for (polled), as TF Serving does.
        """
        self.manager.start()
        deadline = None if ready_timeout_s is None else time.monotonic() + ready_timeout_s
        while not self.manager.is_ready():
            failures = self.manager.startup_failures()
            if failures:
                self.manager.stop()
                details = ", ".join(f"{{name: {k}}}: {v}" for k, v in failures.items())
                raise StartupError(f"{len(failures)} servable(s) did not become available: {details}")
            if self._stop.wait(0.05):
                self.manager.stop()
                raise StartupError("interrupted before the models became available")
            if deadline is not None and time.monotonic() > deadline:
                self.manager.stop()
                raise StartupError("timed out waiting for the models to become available")
        label_problems = self.manager.label_problems()
        if label_problems:  # TF Serving: a label may only name an AVAILABLE version, at startup too
            self.manager.stop()
            raise StartupError("; ".join(label_problems))
        try:
            self._open_ports()
        except OSError as error:
            self.stop()
            raise StartupError(f"cannot open server ports: {error}") from None
        if self.config.model_config_file and self.config.model_config_file_poll_wait_seconds > 0:
            self._config_thread = threading.Thread(
                target=self._poll_config_file, name="config-poller", daemon=True
            )
            self._config_thread.start()

    def _open_ports(self) -> None:
        cfg = self.config
        if cfg.grpc_port is not None or cfg.grpc_socket_path:
            self._grpc, self.grpc_port, self._health = create_grpc_server(
                self.manager,
                self.metrics,
                cfg.host,
                cfg.grpc_port,
                cfg.grpc_max_threads,
                cfg.enable_grpc_health,
                cfg.grpc_socket_path,
            )
            if self.grpc_port is not None:
                log.info("Running gRPC ModelServer at %s:%d ...", cfg.host, self.grpc_port)
            if cfg.grpc_socket_path:
                log.info("Running gRPC ModelServer at UNIX socket %s ...", cfg.grpc_socket_path)
        if cfg.rest_port is not None:
            if cfg.rest_port == cfg.grpc_port and cfg.rest_port != 0:
                log.error(
                    "--rest_api_port cannot be the same as --port. Please use a different port for "
                    "HTTP/REST API. Skipped exporting HTTP/REST API."
                )
                return
            self._rest = RestServer(
                (cfg.host, cfg.rest_port), RestApi(self.manager, self.metrics, cfg.rest), cfg.rest
            )
            self.rest_port = self._rest.port
            self._rest.start()
            log.info("Exporting HTTP/REST API at:localhost:%d ...", self.rest_port)

    def _poll_config_file(self) -> None:
        path = self.config.model_config_file
        last = None
        while not self._stop.wait(self.config.model_config_file_poll_wait_seconds):
            try:
                text = Path(path).read_text(encoding="utf-8")
                if text == last:
                    continue
                self.manager.reload_config(read_model_server_config(path))
                last = text
                log.info("Reloaded model config from %s", path)
            except (OSError, ConfigError) as error:
                log.error("Failed to read ModelServerConfig file: %s (keeping the current config)", error)
            except Exception as error:  # noqa: BLE001 -- a bad reload keeps the old config serving
                log.error("Failed to apply ModelServerConfig file %s: %s", path, error)
                last = text

    def request_stop(self) -> None:
        """Ask serve_until_stopped() to return (signal-handler safe)."""
        self._stop.set()

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, then unload every model."""
        self._stop.set()
        grace = self.config.shutdown_grace_seconds
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        stopped = self._grpc.stop(grace) if self._grpc is not None else None
        if self._rest is not None:
            self._rest.stop(grace)
        if stopped is not None:
            stopped.wait(grace)
        self.manager.stop()

    def serve_until_stopped(self) -> None:
        """Block until SIGTERM/SIGINT (or request_stop), then stop gracefully."""
        while not self._stop.wait(0.5):
            pass
        drain = self.config.shutdown_drain_seconds
        if drain > 0:
            # gRPC cancels calls that reached it but no handler yet when it stops; serve those first.
            log.info("Shutting down: still answering for %.1f s (--shutdown_drain_seconds)", drain)
            if self._health is not None:
                self._health.enter_graceful_shutdown()
            time.sleep(drain)
        log.info("Shutting down: finishing in-flight requests")
        self.stop()
        log.info("Server stopped")


def install_signal_handlers(server: ModelServer) -> None:
    """SIGTERM and SIGINT (Ctrl-C) ask the server to stop gracefully."""

    def handler(signum, frame):
        server.request_stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
