"""One product, three ways to run it: `make up`, docker-compose.yml and k8s/ must agree on ports, model name,
model layout, TF Serving flags and config files, gateway settings and images, with client/contract.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from client import contract
from tests.infra.conftest import REPO, container, find, pod_spec

SERVING_CONFIG = REPO / "serving" / "config"
# TensorFlow sizes its thread pools for the node's cores; only k8s knows the container's CPU limit.
THREAD_FLAGS = ("--tensorflow_intra_op_parallelism", "--tensorflow_inter_op_parallelism")
# Only k8s puts several serving replicas behind one Service address (gRPC connection rebalancing).
K8S_ONLY_FLAGS = (*THREAD_FLAGS, "--grpc_channel_arguments")
# The gateway's bearer token: a secret each deployment passes through, never a value written here.
AUTH_TOKEN = "DIGITS_AUTH_TOKEN"


def _shell_default(script: str, variable: str) -> str:
    match = re.search(rf"^{variable}=\$\{{{variable}:-([^}}]+)\}}$", script, re.MULTILINE)
    assert match, f"scripts/up.sh has no default for {variable}"
    return match.group(1)


def _make_default(variable: str) -> str:
    match = re.search(rf"^{variable}\s*\?=\s*(\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert match, f"Makefile has no default for {variable}"
    return match.group(1)


def _flags(words: list[str]) -> dict[str, str]:
    return {flag.partition("=")[0]: flag.partition("=")[2] for flag in words if flag.startswith("--")}


@pytest.fixture(scope="module")
def up_script() -> str:
    return (REPO / "scripts" / "up.sh").read_text()


@pytest.fixture(scope="module")
def up_serve_flags(up_script) -> dict[str, str]:
    """The digits-serve flags of `make up`, continuation lines joined."""
    command = re.search(r'"\$BIN/digits-serve"(.*?)&\n', up_script.replace("\\\n", " "), re.DOTALL)
    assert command, "scripts/up.sh no longer starts digits-serve"
    return _flags(command.group(1).split())


@pytest.fixture(scope="module")
def k8s(rendered) -> list[dict]:
    return rendered["cpu"]


def test_ports_agree(up_script, compose, k8s):
    for variable in ("GRPC_PORT", "REST_PORT", "GATEWAY_PORT"):
        port = getattr(contract, variable)
        assert _shell_default(up_script, variable) == str(port), variable
    assert compose["services"]["serving"]["ports"] == [
        f"{contract.GRPC_PORT}:{contract.GRPC_PORT}", f"{contract.REST_PORT}:{contract.REST_PORT}"]
    assert compose["services"]["gateway"]["ports"] == [f"{contract.GATEWAY_PORT}:{contract.GATEWAY_PORT}"]
    serving = container(find(k8s, "Deployment", "serving"), "serving")
    assert {p["name"]: p["containerPort"] for p in serving["ports"]} == {
        "grpc": contract.GRPC_PORT, "http": contract.REST_PORT}
    assert {p["name"]: p["port"] for p in find(k8s, "Service", "serving")["spec"]["ports"]} == {
        "grpc": contract.GRPC_PORT, "http": contract.REST_PORT}
    gateway = container(find(k8s, "Deployment", "gateway"), "gateway")
    assert [p["containerPort"] for p in gateway["ports"]] == [contract.GATEWAY_PORT]
    assert [p["port"] for p in find(k8s, "Service", "gateway")["spec"]["ports"]] == [contract.GATEWAY_PORT]


def test_model_name_and_layout_agree(up_script, compose, k8s):
    name, base = contract.DEFAULT_MODEL_NAME, contract.DEFAULT_MODEL_BASE
    assert _make_default("MODEL_NAME") == _shell_default(up_script, "MODEL_NAME") == name
    assert _make_default("MODELS_DIR") == _shell_default(up_script, "MODELS_DIR") == base
    config = (SERVING_CONFIG / "models.config").read_text()
    assert re.findall(r'^\s*name:\s*"([^"]+)"', config, re.MULTILINE) == [name]
    # <model base>/<model name>/<int version>/: the base is ./models on the host, /models in containers.
    assert re.findall(r'base_path:\s*"([^"]+)"', config) == [f"/models/{name}"]
    assert f"./{base}:/models:ro" in compose["services"]["serving"]["volumes"]
    for trainer in ("trainer", "trainer-cpu"):
        assert f"./{base}:/models" in compose["services"][trainer]["volumes"]
    for kind, workload in (("Deployment", "serving"), ("Job", "trainer")):
        mounts = container(find(k8s, kind, workload), workload)["volumeMounts"]
        assert {"models": "/models"}.items() <= {m["name"]: m["mountPath"] for m in mounts}.items()
    job_args = container(find(k8s, "Job", "trainer"), "trainer")["args"]
    assert job_args[job_args.index("--model-name") + 1] == name


def test_tf_serving_flags_and_config_files_agree(up_serve_flags, compose, k8s):
    compose_flags = _flags(compose["services"]["serving"]["command"])
    k8s_serving = container(find(k8s, "Deployment", "serving"), "serving")
    k8s_flags = _flags(k8s_serving["args"])
    assert {f: v for f, v in k8s_flags.items() if f not in K8S_ONLY_FLAGS} == compose_flags
    cpu_limit = k8s_serving["resources"]["limits"]["cpu"]
    assert all(k8s_flags[flag] == cpu_limit for flag in THREAD_FLAGS), "thread pools = the CPU limit"
    for flag in ("--model_config_file", "--batching_parameters_file", "--monitoring_config_file"):
        assert (SERVING_CONFIG / compose_flags[flag].removeprefix("/config/")).is_file(), flag
    # make up's digits-serve reads the same batching and monitoring files from serving/config/.
    for flag, value in up_serve_flags.items():
        if value.startswith("serving/config/"):
            assert compose_flags[flag] == "/config/" + value.removeprefix("serving/config/"), flag
    assert "--enable_batching" in up_serve_flags and "--enable_batching" in compose_flags


def test_default_client_batches_fit_the_served_batch_size():
    """A request over batching.config's max_batch_size is refused: no client default may send one."""
    from client.evaluate import build_parser
    from client.gateway_settings import DEFAULTS
    from client.model_client import ClientConfig

    text = (SERVING_CONFIG / "batching.config").read_text()
    largest = int(re.search(r"^max_batch_size\s*\{\s*value:\s*(\d+)", text, re.MULTILINE).group(1))
    assert ClientConfig("localhost:8500").batch_size <= largest
    assert DEFAULTS["MAX_BATCH_IMAGES"] <= largest
    assert build_parser().get_default("batch_size") <= largest


def test_make_up_train_and_demo_fetch_mnist_alone():
    """Fashion-MNIST comes through apt-get (Debian/Ubuntu): targets that read MNIST alone never need it."""
    makefile = (REPO / "Makefile").read_text()
    for target in ("train", "up", "demo"):
        prerequisites = re.search(rf"^{target}:([^#\n]*)", makefile, re.MULTILINE).group(1).split()
        assert prerequisites == ["data-mnist"], target
    assert "--dataset mnist" in re.search(r"^data-mnist:.*\n\t(.*)", makefile, re.MULTILINE).group(1)


def _make_sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """The Makefile in a checkout whose path has a space, `setup` done, with stand-ins for digits-train and
    scripts/up.sh that append what they got (arguments, $DIGITS_DATA_DIR) to a JSON-lines record."""
    repo = tmp_path / "my checkout"
    (repo / "scripts").mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, repo / name)
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    os.utime(repo / "pyproject.toml", (0, 0))
    (repo / ".venv" / ".installed").touch()  # newer than pyproject.toml: `setup` has nothing to do
    record = tmp_path / "calls.jsonl"
    recorder = (f"#!{sys.executable}\nimport json, os, sys\nwith open({str(record)!r}, 'a') as out:\n"
                "    out.write(json.dumps([sys.argv[1:], os.environ.get('DIGITS_DATA_DIR')]) + '\\n')\n")
    (bin_dir / "digits-train").write_text(recorder)
    (bin_dir / "digits-train").chmod(0o755)
    (repo / "scripts" / "up.sh").write_text(
        '".venv/bin/digits-train" up.sh "$MODELS_DIR" "$MODEL_NAME" "$PRESET"\n'
    )
    return repo, record


def _make(repo: Path, *args: str, **env_extra: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS", "DIGITS_"))}
    result = subprocess.run(["make", "-s", *args], cwd=repo, env={**env, **env_extra}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_make_passes_folders_with_spaces_whole(tmp_path):
    """`make data/train/up` in a checkout whose path has a space, with DATA_DIR and MODELS_DIR that have
    one too: each folder reaches digits-train and up.sh as one argument."""
    repo, record = _make_sandbox(tmp_path)
    for target in ("data", "train", "up"):
        _make(repo, target, "DATA_DIR=my data", "MODELS_DIR=my models")
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert calls == [
        [["data", "--data-dir", "my data"], "my data"],
        [["data", "--dataset", "mnist", "--data-dir", "my data"], "my data"],
        [["train", "--preset", "fast", "--models-dir", "my models", "--model-name", "mnist"], "my data"],
        [["data", "--dataset", "mnist", "--data-dir", "my data"], "my data"],
        [["up.sh", "my models", "mnist", "fast"], "my data"],
    ]


def test_make_reads_digits_data_dir_from_the_environment(tmp_path):
    """DIGITS_DATA_DIR is what digits-train and digits-eval read: `make` must not replace it with ./data."""
    repo, record = _make_sandbox(tmp_path)
    _make(repo, "data-mnist", DIGITS_DATA_DIR="/srv/mnist data")
    _make(repo, "data-mnist", "DATA_DIR=given")  # the make variable still wins
    _make(repo, "data-mnist")
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(args[-1], env) for args, env in calls] == [
        ("/srv/mnist data", "/srv/mnist data"), ("given", "given"), ("data", "data")
    ]


def test_config_files_reach_both_deployments_whole(compose, k8s):
    assert "./serving/config:/config:ro" in compose["services"]["serving"]["volumes"]
    config_map = next(m for m in k8s if m["kind"] == "ConfigMap")
    assert set(config_map["data"]) == {p.name for p in SERVING_CONFIG.glob("*.config")}
    mounts = container(find(k8s, "Deployment", "serving"), "serving")["volumeMounts"]
    assert {"name": "config", "mountPath": "/config", "readOnly": True} in mounts


def _image_env(instructions) -> dict[str, str]:
    final = max(i.stage for i in instructions)
    pairs = [w for i in instructions if i.keyword == "ENV" and i.stage == final for w in i.args.split()]
    return dict(pair.split("=", 1) for pair in pairs)


def test_gateway_settings_agree(up_script, compose, k8s, dockerfiles):
    launch = re.search(r"((?:DIGITS_\w+=\S+\s+(?:\\\s+)?)+)\"\$BIN/digits-gateway\"", up_script)
    assert launch, "scripts/up.sh no longer starts digits-gateway with DIGITS_* settings"
    up_env = dict(re.findall(r"(DIGITS_\w+)=\"?([^\"\s]+)\"?", launch.group(1)))
    compose_env = dict(compose["services"]["gateway"]["environment"])
    k8s_env = {e["name"]: e for e in container(find(k8s, "Deployment", "gateway"), "gateway")["env"]}
    # The token is passed through, not agreed on: compose from the shell, k8s from an optional Secret,
    # make up from the environment digits-gateway inherits.
    assert compose_env.pop(AUTH_TOKEN) == f"${{{AUTH_TOKEN}:-}}"
    assert k8s_env.pop(AUTH_TOKEN)["valueFrom"]["secretKeyRef"]["optional"] is True
    k8s_env = {name: e["value"] for name, e in k8s_env.items()}
    assert set(up_env) == set(compose_env) == set(k8s_env)
    assert up_env["DIGITS_MODEL_SERVER"] == "localhost:$GRPC_PORT"
    server = f"serving:{contract.GRPC_PORT}"  # the serving service's gRPC port, in compose and k8s alike
    assert compose_env["DIGITS_MODEL_SERVER"] == k8s_env["DIGITS_MODEL_SERVER"] == server
    assert compose_env["DIGITS_MODEL_NAME"] == k8s_env["DIGITS_MODEL_NAME"] == contract.DEFAULT_MODEL_NAME
    image_env = _image_env(dockerfiles["gateway"])
    assert {name: image_env[name] for name in compose_env} == compose_env, "the image's defaults"


def test_trainer_data_dir_agrees(compose, k8s, dockerfiles):
    image_dir = _image_env(dockerfiles["trainer"])["DIGITS_DATA_DIR"]
    assert f"digits-train data --data-dir {image_dir}" in " ".join(i.args for i in dockerfiles["trainer"])
    for name in ("trainer", "trainer-cpu"):
        assert compose["services"][name]["environment"]["DIGITS_DATA_DIR"] == image_dir
        assert f"data:{image_dir}" in compose["services"][name]["volumes"]
    job_env = {e["name"]: e.get("value") for e in container(find(k8s, "Job", "trainer"), "trainer")["env"]}
    assert job_env["DIGITS_DATA_DIR"] == image_dir


def test_serving_health_checks_are_the_same_script(compose, k8s):
    compose_script = compose["services"]["serving"]["healthcheck"]["test"][-1]
    readiness = container(find(k8s, "Deployment", "serving"), "serving")["readinessProbe"]
    k8s_script = readiness["exec"]["command"][-1]
    assert compose_script == k8s_script


def test_metrics_are_scraped_where_monitoring_config_serves_them(k8s):
    path = re.search(r'path:\s*"([^"]+)"', (SERVING_CONFIG / "monitoring.config").read_text()).group(1)
    annotations = find(k8s, "Deployment", "serving")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == path
    assert annotations["prometheus.io/port"] == str(contract.REST_PORT)


def test_images_agree(compose, k8s):
    pairs = (("serving", "Deployment", "serving"), ("gateway", "Deployment", "gateway"),
             ("trainer", "Job", "trainer"), ("trainer-cpu", "Job", "trainer"))
    for service, kind, workload in pairs:
        k8s_image = container(find(k8s, kind, workload), workload)["image"]
        assert compose["services"][service]["image"] == k8s_image, service


def test_trainer_user_matches_the_image_user(dockerfiles, k8s):
    image_user = [i.args for i in dockerfiles["trainer"] if i.keyword == "USER"][-1].split(":")[0]
    for kind, name in (("Job", "trainer"), ("Deployment", "serving"), ("Deployment", "gateway")):
        assert str(pod_spec(find(k8s, kind, name))["securityContext"]["runAsUser"]) == image_user, name


def test_gateway_health_checks_use_its_own_routes(compose, k8s, dockerfiles):
    source = (REPO / "client" / "gateway.py").read_text()
    routes = set(re.findall(r'@\w+\.(?:get|route)\("([^"]+)"', source))
    gateway = container(find(k8s, "Deployment", "gateway"), "gateway")
    readiness = gateway["readinessProbe"]["httpGet"]["path"]
    liveness = gateway["livenessProbe"]["httpGet"]["path"]
    # Liveness must not hang on TF Serving (a restart would not fix it); readiness should.
    assert {readiness, liveness} <= routes and readiness != liveness
    compose_check = " ".join(compose["services"]["gateway"]["healthcheck"]["test"])
    image_check = [i.args for i in dockerfiles["gateway"] if i.keyword == "HEALTHCHECK"][-1]
    for check in (compose_check, image_check):
        path = re.search(rf"127\.0\.0\.1:{contract.GATEWAY_PORT}(/\w+)", check).group(1)
        assert path in routes, check


def _http_stub(prelude: str, port: str, body: bytes, serve: str) -> str:
    """A stand-in program for scripts/up.sh: runs `prelude`, then answers GETs on `port` with `body`."""
    return f'''#!{sys.executable}
import shutil, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
{prelude}
class Answer(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "{len(body)}")
        self.end_headers()
        self.wfile.write({body!r})
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", {port}), Answer).{serve}()
'''


def _serve_stub(copy: Path, state: str) -> str:
    """digits-serve: keeps a copy of its --model_config_file, and says version 1 is in `state`."""
    return _http_stub(
        "flags = dict(arg[2:].split('=', 1) for arg in sys.argv[1:] if '=' in arg)\n"
        f"shutil.copy(flags['model_config_file'], {str(copy)!r})",
        "int(flags['rest_api_port'])",
        f'{{"model_version_status": [{{"version": "1", "state": "{state}"}}]}}'.encode(), "serve_forever",
    )


def _gateway_stub(mark: Path) -> str:
    """digits-gateway: leaves `mark` when started, answers up.sh's health check, then exits."""
    return _http_stub(f"open({str(mark)!r}, 'w').close()", "int(sys.argv[sys.argv.index('--port') + 1])",
                      b'{"status": "ok"}', "handle_request")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_up(
    tmp_path: Path, state: str, *, make_version=None, **env_extra: str
) -> subprocess.CompletedProcess:
    """scripts/up.sh with stand-ins: a model server that answers `state` for version 1, a gateway that
    leaves a mark when started and exits after up.sh's health check, a trainer that leaves its arguments
    in tmp_path/trained. `make_version(base)` fills the model folder (default: a folder `1`, no training)."""
    _copy_scripts(tmp_path, "up.sh")
    shutil.copytree(SERVING_CONFIG, tmp_path / "serving" / "config")
    base = tmp_path / "models" / contract.DEFAULT_MODEL_NAME
    base.mkdir(parents=True)
    (make_version or (lambda folder: (folder / "1").mkdir()))(base)
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    stubs = {"python": f'#!/bin/sh\nexec "{sys.executable}" "$@"\n',
             "digits-train": f'#!/bin/sh\necho "$@" > "{tmp_path / "trained"}"\n',
             "digits-gateway": _gateway_stub(tmp_path / "gateway-started"),
             "digits-serve": _serve_stub(tmp_path / "served.config", state)}
    for name, text in stubs.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path / "tmp"),
           "GRPC_PORT": str(_free_port()), "REST_PORT": str(_free_port()), "GATEWAY_PORT": str(_free_port()),
           **env_extra}
    for name in ("MODELS_DIR", "MODEL_NAME"):
        env.pop(name, None)
    # Its own process group, so that a hanging up.sh takes its stand-ins with it when the test gives up.
    up = subprocess.Popen(["bash", str(tmp_path / "scripts" / "up.sh")], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = up.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(up.pid, signal.SIGKILL)
        raise
    return subprocess.CompletedProcess(up.args, up.returncode, out, err)


def test_make_up_serves_models_config_with_the_local_model_folder(tmp_path):
    from serving.config_files import read_model_server_config

    served = tmp_path / "served.config"
    result = _run_up(tmp_path, "AVAILABLE")
    assert result.returncode == 0, result.stdout + result.stderr
    # The file compose and k8s serve, version policy included, with this machine's model folder.
    expected = read_model_server_config(SERVING_CONFIG / "models.config")
    expected.model_config_list.config[0].base_path = str(tmp_path / "models" / contract.DEFAULT_MODEL_NAME)
    assert read_model_server_config(served) == expected
    assert not list((tmp_path / "tmp").iterdir()), "up.sh leaves its config copy behind"


def test_make_up_fails_when_the_model_never_becomes_available(tmp_path):
    result = _run_up(tmp_path, "LOADING", SERVE_WAIT_S="2")
    assert result.returncode == 1
    assert "did not say AVAILABLE within 2 s" in result.stderr
    assert not (tmp_path / "gateway-started").exists(), "the gateway started beside a model that never loaded"
    assert not list((tmp_path / "tmp").iterdir()), "up.sh leaves its config copy behind"



def _folder(name):
    return lambda base: (base / name).mkdir()


def _file(name):
    return lambda base: (base / name).write_text("not a model")


@pytest.mark.parametrize(
    ("make_version", "trains"),
    [
        (_folder("1"), False),
        (_folder("007"), False),
        (_folder(str(2**63 - 1)), False),
        (_folder("1abc"), True),
        (_folder("v2"), True),
        (_folder("\u00b2"), True),  # superscript two: str.isdigit() says yes, TF Serving says no
        (_folder("\u0661"), True),  # Arabic-Indic one
        (_folder(str(2**63)), True),  # past int64
        (_file("1"), True),  # a file is never a version
        (lambda base: None, True),  # an empty model folder
    ],
    ids=["1", "007", "int64-max", "1abc", "v2", "superscript-2", "arabic-indic-1", "int64-max+1", "file-1",
         "empty"],
)
def test_make_up_trains_unless_a_version_folder_is_there_as_the_server_reads_versions(
    tmp_path, make_version, trains
):
    """up.sh skips training only for a folder digits-serve would serve (client/contract.py's parse_version);
    otherwise it trains first, instead of waiting for a model that never loads."""
    result = _run_up(tmp_path, "AVAILABLE", make_version=make_version)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "trained").exists() == trains, result.stdout
    if trains:
        assert "up: no model under" in result.stdout
        assert "--preset fast" in (tmp_path / "trained").read_text()


@pytest.mark.parametrize("value", ["2m", "two", "-1"])
def test_make_up_refuses_a_serve_wait_s_that_is_not_seconds_before_starting_anything(tmp_path, value):
    result = _run_up(tmp_path, "AVAILABLE", SERVE_WAIT_S=value)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"up.sh: SERVE_WAIT_S must be a whole number of seconds, not '{value}'" in result.stderr
    assert not (tmp_path / "served.config").exists(), "digits-serve started"


def test_make_up_reads_a_serve_wait_s_with_leading_zeros_as_decimal(tmp_path):
    """bash arithmetic would take 08 for a bad octal number (an error from deep in the wait) and 010 for 8."""
    result = _run_up(tmp_path, "AVAILABLE", SERVE_WAIT_S="08")
    assert result.returncode == 0, result.stdout + result.stderr


def test_make_up_waits_serve_wait_s_in_decimal_seconds(tmp_path):
    result = _run_up(tmp_path, "LOADING", SERVE_WAIT_S="02")
    assert result.returncode == 1
    assert "did not say AVAILABLE within 2 s" in result.stderr, result.stderr


def test_make_up_refuses_a_serve_wait_s_too_large_to_add_before_starting_anything(tmp_path):
    result = _run_up(tmp_path, "AVAILABLE", SERVE_WAIT_S="99999999999999999999")
    assert result.returncode == 2, result.stdout + result.stderr
    message = "up.sh: SERVE_WAIT_S must be at most 999999999 seconds, not '99999999999999999999'"
    assert message in result.stderr, result.stderr
    assert not (tmp_path / "served.config").exists(), "digits-serve started"


def _copy_scripts(tmp_path: Path, script: str) -> None:
    """`script` and the shell functions it sources, into tmp_path/scripts."""
    (tmp_path / "scripts").mkdir()
    for name in (script, "http.sh"):
        shutil.copy(REPO / "scripts" / name, tmp_path / "scripts" / name)


_LOADING_SERVE_STUB = _http_stub(
    "flags = dict(arg[2:].split('=', 1) for arg in sys.argv[1:] if '=' in arg)\n"
    "print('stub: still loading', file=sys.stderr, flush=True)",
    "int(flags['rest_api_port'])",
    b'{"model_version_status": [{"version": "1", "state": "LOADING"}]}', "serve_forever",
)
_DYING_SERVE_STUB = "#!/bin/sh\necho 'stub: cannot load' >&2\nexit 1\n"


@pytest.mark.parametrize(
    ("serve", "words"),
    [
        (_LOADING_SERVE_STUB, ("did not say AVAILABLE within 2 s", "stub: still loading")),
        (_DYING_SERVE_STUB, ("demo: digits-serve exited", "stub: cannot load")),
    ],
    ids=["never-available", "exits"],
)
def test_make_demo_waits_serve_wait_s_for_the_model_then_fails_with_its_log(tmp_path, serve, words):
    """scripts/demo.sh with stand-ins (a trainer that trains nothing, a model server forever LOADING or one
    that exits at once): it fails with the server's log and stops what it started."""
    demo, _, err = _run_demo(tmp_path, serve)
    assert demo.returncode == 1
    assert all(word in err for word in words), err
    with pytest.raises(ProcessLookupError):  # nothing left in its process group: the server was stopped
        os.killpg(demo.pid, 0)
    assert not list((tmp_path / "tmp").iterdir()), "demo.sh leaves its scratch folder behind"


_ANSWERING_SERVE_STUB = f'''#!{sys.executable}
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
flags = dict(arg[2:].split("=", 1) for arg in sys.argv[1:] if "=" in arg)
class Answer(BaseHTTPRequestHandler):
    def answer(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.answer(200, b'{{"model_version_status": [{{"version": "1", "state": "AVAILABLE"}}]}}')
    def do_POST(self):
        images = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["instances"]
        if [len(images), len(images[0]), len(images[0][0])] != [1, 28, 28]:
            return self.answer(400, b'{{"error": "not one 28x28 image"}}')
        self.answer(200, b'{{"predictions": [{{"classes": 7, "probabilities": [0.1, 0.9]}}]}}')
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", int(flags["rest_api_port"])), Answer).serve_forever()
'''


def test_make_demo_runs_through_with_no_curl_installed(tmp_path):
    """`make demo` needs no apt-get: with only the commands bash itself needs on PATH (no curl), it asks the
    server for its status, sends it the first MNIST test image, prints the answer and evaluates."""
    path = tmp_path / "path"
    path.mkdir()
    for tool in ("dirname", "mktemp", "rm", "cat", "sleep"):
        (path / tool).symlink_to(shutil.which(tool))
    demo, out, err = _run_demo(tmp_path, _ANSWERING_SERVE_STUB, PATH=str(path))
    assert demo.returncode == 0, out + err
    assert '"state": "AVAILABLE"' in out and "classes: 7  p=0.9000" in out, out
    assert re.search(r"eval: --target 127\.0\.0\.1:\d+ --protocol grpc --dataset mnist", out), out
    with pytest.raises(ProcessLookupError):
        os.killpg(demo.pid, 0)
    assert not list((tmp_path / "tmp").iterdir()), "demo.sh leaves its scratch folder behind"


def _run_demo(tmp_path: Path, serve: str, **env_extra: str) -> tuple[subprocess.Popen, str, str]:
    """scripts/demo.sh with stand-ins: a trainer that trains nothing, `serve` as digits-serve, a digits-eval
    that prints its arguments; MNIST from the test data folder."""
    from tests.conftest import data_dir

    _copy_scripts(tmp_path, "demo.sh")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    stubs = {"python": f'#!/bin/sh\nexec "{sys.executable}" "$@"\n', "digits-train": "#!/bin/sh\n",
             "digits-serve": serve, "digits-eval": '#!/bin/sh\necho "eval: $*"\n'}
    for name, text in stubs.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "SERVE_WAIT_S": "2", "PYTHONPATH": str(REPO),
           "DIGITS_DATA_DIR": str(data_dir().resolve()), **env_extra}
    demo = subprocess.Popen([shutil.which("bash"), str(tmp_path / "scripts" / "demo.sh")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = demo.communicate(timeout=30)  # it used to wait 60 s whatever SERVE_WAIT_S said
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGKILL)
        raise
    return demo, out, err
