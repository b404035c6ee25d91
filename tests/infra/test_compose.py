"""docker-compose.yml: valid for docker-compose, pinned images, TF Serving configured by our files with a
healthcheck that really tells AVAILABLE apart, a gateway that waits for it, and the two trainers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from tests.infra.conftest import REPO, run_tool

LONG_RUNNING = ("serving", "gateway")
TRAINERS = ("trainer", "trainer-cpu")


def test_compose_file_is_valid_with_and_without_the_train_profile(docker_compose):
    for extra in ([], ["--profile", "train"]):
        result = run_tool([docker_compose, "-f", "docker-compose.yml", *extra, "config", "-q"])
        assert result.returncode == 0, result.stderr


def test_every_image_is_pinned(compose, pyproject):
    version = pyproject["project"]["version"]
    for name, service in compose["services"].items():
        image, _, tag = service["image"].rpartition(":")
        assert image and tag not in ("", "latest"), f"{name}: {service['image']} is not pinned"
        if "build" in service:  # our own images carry the project's version
            assert tag == version, f"{name}: tag {tag} is not the project version {version}"


def test_serving_is_the_official_tf_serving_release_of_our_tensorflow_line(compose, dependency_pins):
    line = re.escape(dependency_pins["tensorflow-serving-api"])
    assert re.fullmatch(rf"tensorflow/serving:{line}\.\d+", compose["services"]["serving"]["image"])


def test_serving_reads_models_read_only_and_our_config_files(compose):
    serving = compose["services"]["serving"]
    assert "./models:/models:ro" in serving["volumes"]
    assert "./serving/config:/config:ro" in serving["volumes"]
    flags = dict(flag.partition("=")[::2] for flag in serving["command"])
    for flag in ("--model_config_file", "--batching_parameters_file", "--monitoring_config_file"):
        target = flags[flag]
        assert target.startswith("/config/"), f"{flag}={target} is not in the mounted config folder"
        assert (REPO / "serving" / "config" / target.removeprefix("/config/")).is_file(), flag
    assert "--enable_batching" in flags
    assert int(flags["--model_config_file_poll_wait_seconds"]) > 0, "new models.config must be picked up"
    assert int(flags["--file_system_poll_wait_seconds"]) > 0, "new versions must be picked up without restart"


def test_long_running_services_restart_and_run_locked_down(compose):
    for name in LONG_RUNNING:
        service = compose["services"][name]
        assert service["restart"] == "unless-stopped"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "healthcheck" in service
    assert compose["services"]["serving"]["user"].split(":")[0] not in ("0", "root")


def test_gateway_starts_only_once_serving_is_healthy(compose):
    depends = compose["services"]["gateway"]["depends_on"]
    assert depends == {"serving": {"condition": "service_healthy"}}


def test_gateway_takes_its_auth_token_from_the_shell(docker_compose):
    from client.gateway_settings import ENV_PREFIX

    name = ENV_PREFIX + "AUTH_TOKEN"
    environ = {key: value for key, value in os.environ.items() if key != name}
    for shell, expected in (({name: "s3cret"}, "s3cret"), ({}, "")):  # unset: empty, authentication off
        result = subprocess.run([docker_compose, "-f", "docker-compose.yml", "config"], cwd=REPO,
                                env={**environ, **shell}, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        environment = yaml.safe_load(result.stdout)["services"]["gateway"]["environment"]
        assert environment.get(name) == expected, shell


def test_trainers_are_on_demand_and_write_models_as_a_non_root_user(compose):
    for name in TRAINERS:
        trainer = compose["services"][name]
        assert trainer["profiles"] == ["train"] and trainer["restart"] == "no"
        assert trainer["build"]["dockerfile"] == "trainer/Dockerfile"
        assert "./models:/models" in trainer["volumes"]
        assert "data:/data" in trainer["volumes"], "the data cache is a named volume"
        assert trainer["user"].split(":")[0] not in ("0", "root")
    assert "data" in compose["volumes"]


def test_gpu_trainer_reserves_nvidia_gpus_and_cpu_trainer_none(compose):
    devices = compose["services"]["trainer"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert "deploy" not in compose["services"]["trainer-cpu"]
    assert compose["services"]["trainer-cpu"]["environment"]["CUDA_VISIBLE_DEVICES"] == ""


def test_trainer_commands_are_ones_digits_train_accepts(compose):
    from trainer.cli import build_parser

    for name in TRAINERS:
        command = compose["services"][name].get("command")
        if command:
            build_parser().parse_args(command)
    # The documented run: `docker compose --profile train run --rm trainer train --preset fast`
    build_parser().parse_args(["train", "--preset", "fast"])


# ---------------------------------------------------------------------------------------------- healthcheck
class _StatusServer(ThreadingHTTPServer):
    """Answers GET /v1/models/<name> as TF Serving does (api_rest.md: 200 with a state list, or 404)."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _StatusHandler)
        self.states: dict[str, list[str]] = {}


class _StatusHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        name = self.path.rsplit("/", 1)[-1]
        states = self.server.states.get(name)
        if states is None:
            code, body = 404, {"error": f"Could not find any versions of model {name}"}
        else:
            code = 200
            body = {"model_version_status": [
                {"version": str(v), "state": s, "status": {"error_code": "OK", "error_message": ""}}
                for v, s in enumerate(states, start=1)]}
        payload = json.dumps(body, indent=2).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture()
def status_server():
    server = _StatusServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _healthcheck(compose, port: int) -> int:
    from client.contract import REST_PORT

    test = compose["services"]["serving"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"]
    script = test[3].replace(f"/dev/tcp/127.0.0.1/{REST_PORT}", f"/dev/tcp/127.0.0.1/{port}")
    return subprocess.run(["bash", "-c", script], capture_output=True, timeout=10).returncode


@pytest.mark.parametrize(
    ("states", "healthy"),
    [
        (["AVAILABLE"], True),
        (["END", "AVAILABLE"], True),  # an old version unloaded, the new one serving
        (["LOADING"], False),
        (["END"], False),  # 200, yet nothing can answer
        (None, False),  # 404: model unknown
    ],
)
def test_serving_healthcheck_passes_only_with_an_available_version(compose, status_server, states, healthy):
    from client.contract import DEFAULT_MODEL_NAME

    if states is not None:
        status_server.states[DEFAULT_MODEL_NAME] = states
    assert (_healthcheck(compose, status_server.server_address[1]) == 0) is healthy


def test_serving_healthcheck_fails_when_nothing_listens(compose):
    import socket

    with socket.socket() as probe:  # a port that was just free
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert _healthcheck(compose, port) != 0
