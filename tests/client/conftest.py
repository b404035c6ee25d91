"""Fixtures for the client tests: `digits-serve` on free ports over the shared model, and the gateway."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from werkzeug.serving import make_server

from client.contract import DEFAULT_MODEL_NAME

SERVER_START_TIMEOUT_S = 120
GRPC_LINE = re.compile(r"Running gRPC ModelServer at [^ ]*:(\d+)")
REST_LINE = re.compile(r"Exporting HTTP/REST API at:[^ ]*:(\d+)")


@dataclass
class ServedModel:
    """A running `digits-serve` process and where to reach it."""

    process: subprocess.Popen
    grpc_target: str = ""
    rest_target: str = ""
    log: list[str] = field(default_factory=list)

    def target(self, protocol: str) -> str:
        return self.grpc_target if protocol == "grpc" else self.rest_target

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def model_config_text(base_path: Path) -> str:
    """Serve every version (not just the newest) and label them, so tests can pick either."""
    return f"""model_config_list {{
  config {{
    name: '{DEFAULT_MODEL_NAME}'
    base_path: '{base_path}'
    model_platform: 'tensorflow'
    model_version_policy {{ all {{}} }}
    version_labels {{ key: 'stable' value: 1 }}
    version_labels {{ key: 'canary' value: 2 }}
  }}
}}
"""


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_digits_serve(config_file: Path, poll_wait_s: float = 0) -> ServedModel:
    """Run the real `digits-serve` CLI on free ports and read the ports it got from its log.

    gRPC takes port 0 (any free port); REST cannot (0 means "REST off", as in TF Serving). The model folders
    are read once, unless `poll_wait_s` > 0: then every `poll_wait_s` seconds.
    """
    command = [
        sys.executable, "-m", "serving.cli", "--host=127.0.0.1", "--port=0", f"--rest_api_port={free_port()}",
        f"--model_config_file={config_file}", f"--file_system_poll_wait_seconds={poll_wait_s}",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    served = ServedModel(process)
    ports_seen = threading.Event()

    def drain() -> None:  # keep reading so the pipe never fills and blocks the server
        for line in process.stderr:
            served.log.append(line)
            if match := GRPC_LINE.search(line):
                served.grpc_target = f"127.0.0.1:{match.group(1)}"
            if match := REST_LINE.search(line):
                served.rest_target = f"127.0.0.1:{match.group(1)}"
            if served.grpc_target and served.rest_target:
                ports_seen.set()
        ports_seen.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not ports_seen.wait(0.2) and time.monotonic() < deadline:
        pass
    if not (served.grpc_target and served.rest_target):
        process.kill()
        pytest.fail("digits-serve did not start:\n" + "".join(served.log[-30:]), pytrace=False)
    return served


@pytest.fixture(scope="session")
def served_model(mnist_model_dir, tmp_path_factory) -> Iterator[ServedModel]:
    """`digits-serve` with versions 1 and 2 of the shared test model (labels stable=1, canary=2)."""
    config_file = tmp_path_factory.mktemp("serving") / "models.config"
    config_file.write_text(model_config_text(Path(mnist_model_dir).resolve()))
    served = start_digits_serve(config_file)
    yield served
    served.stop()


@pytest.fixture(scope="session")
def serve_factory():
    """`with serve_factory(config_file, poll_wait_s) as served:` a `digits-serve` of its own, then stopped."""

    @contextlib.contextmanager
    def serve(config_file: Path, poll_wait_s: float = 0) -> Iterator[ServedModel]:
        served = start_digits_serve(config_file, poll_wait_s)
        try:
            yield served
        finally:
            served.stop()

    return serve


@pytest.fixture(scope="session")
def test_digits(mnist_data) -> tuple[np.ndarray, np.ndarray]:
    """The first 500 MNIST test images (uint8 [500, 28, 28]) and their labels."""
    return mnist_data.x_test[:500], mnist_data.y_test[:500].astype(np.int64)


@dataclass
class RunningGateway:
    """A gateway app served over a real socket in a background thread."""

    url: str
    app: object


@contextlib.contextmanager
def run_gateway(config: dict) -> Iterator[RunningGateway]:
    """Serve `create_app(config)` with Werkzeug's threaded server on a free port."""
    from client.gateway import create_app

    app = create_app(config)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield RunningGateway(f"http://127.0.0.1:{server.server_port}", app)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        app.extensions["digits"].client.close()


@pytest.fixture(scope="session")
def gateway_factory():
    """`with gateway_factory(config) as running:` a gateway with this config on a free port."""
    return run_gateway


@pytest.fixture
def unused_port() -> int:
    """A local port nothing listens on."""
    return free_port()


@pytest.fixture(scope="session")
def gateway(served_model) -> Iterator[RunningGateway]:
    """The gateway in front of `digits-serve` over gRPC, with small limits to test them cheaply."""
    with run_gateway(
        {
            "MODEL_SERVER": served_model.grpc_target,
            "PROTOCOL": "grpc",
            "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,
            "MAX_IMAGE_PIXELS": 4_000_000,
            "MAX_IMAGE_SIDE": 4_096,
            "MAX_BATCH_IMAGES": 64,
        }
    ) as running:
        yield running
