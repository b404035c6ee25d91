"""Model lifecycle: poll base paths, load versions per policy, keep labels, unload old ones, report status."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from client.contract import parse_version
from serving.errors import FailedPrecondition, InvalidArgument, NotFound, ServingError
from serving.servable import Servable

log = logging.getLogger(__name__)
State = get_model_status_pb2.ModelVersionStatus.State


@dataclass
class VersionEntry:
    """What the state monitor knows of one version (kept after unload: TF Serving lists END versions)."""

    state: int = State.START
    error_code: int = error_codes_pb2.OK
    error_message: str = ""
    servable: Servable | None = None
    fingerprint: tuple = ()


@dataclass
class ManagedModel:
    """One configured model and its versions."""

    config: model_server_config_pb2.ModelConfig
    versions: dict[int, VersionEntry] = field(default_factory=dict)
    warned_empty: bool = False


def list_version_dirs(base_path: Path) -> dict[int, Path]:
    """Numeric child directories of a base path (other names are ignored).

    Raises OSError when the base path is missing or unreadable: the caller keeps what it serves.
    """
    versions: dict[int, Path] = {}
    for child in list(os.scandir(base_path)):
        version = parse_version(child.name)
        if version is not None and child.is_dir():
            versions.setdefault(version, Path(child.path))
    return versions


def version_fingerprint(path: Path) -> tuple:
    """Cheap identity of a version directory's content: a changed fingerprint earns a failed load a retry."""
    entries = []
    for sub in (path, path / "variables"):
        try:
            for child in os.scandir(sub):
                stat = child.stat()
                entries.append((child.path, stat.st_size, stat.st_mtime_ns))
        except OSError:
            continue
    return tuple(sorted(entries))


def _load_error_code(error: Exception) -> int:
    """The status code a failed load reports (GetModelStatus' error_code): the failure's own, as TF Serving.

    Our typed errors carry a grpc.StatusCode (a warmup request naming an unknown signature:
    FAILED_PRECONDITION), TensorFlow's an error_code number (a warmup file that is not TFRecord: DATA_LOSS);
    anything else, e.g. a SavedModel Python cannot read, is reported as INVALID_ARGUMENT.
    """
    if isinstance(error, ServingError):
        return error.code.value[0] or error_codes_pb2.UNKNOWN
    code = getattr(error, "error_code", None)
    if isinstance(code, int) and not isinstance(code, bool):
        return code or error_codes_pb2.UNKNOWN
    return error_codes_pb2.INVALID_ARGUMENT


def aspired_versions(policy, available_dirs: list[int]) -> set[int]:
    """Versions the policy wants loaded (latest{1} when unset), among the complete version directories."""
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return set(available_dirs)
    if kind == "specific":
        return set(policy.specific.versions) & set(available_dirs)
    count = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions > 0 else 1
    return set(sorted(available_dirs)[-count:])


class ModelManager:
    """Owns every loaded Servable; the polling thread changes them, request threads only read."""

    def __init__(
        self,
        config: model_server_config_pb2.ModelServerConfig,
        load_servable: Callable[[str, int, Path], Servable],
        poll_wait_seconds: float = 1.0,
    ):
        self._load_servable = load_servable
        self._poll_wait_seconds = poll_wait_seconds
        self._lock = threading.RLock()
        self._poll_lock = threading.Lock()  # one poll at a time: the thread, a reload, a test
        self._models: dict[str, ManagedModel] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._set_config(config)

    # ------------------------------------------------------------------------------------ config
    def _set_config(self, config: model_server_config_pb2.ModelServerConfig) -> list[str]:
        """Adopt a config; returns the names of models it removes (unloaded on the next poll)."""
        with self._lock:
            wanted = {c.name: c for c in config.model_config_list.config}
            removed = [name for name in self._models if name not in wanted]
            for name, model_config in wanted.items():
                if name in self._models:
                    self._models[name].config = model_config
                else:
                    self._models[name] = ManagedModel(config=model_config)
            for name in removed:
                self._models[name].config = model_server_config_pb2.ModelConfig(name=name)  # no base path
            return removed

    def reload_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Realise a new config (and only it): load what it adds, unload what it drops, check labels.

        As in TF Serving, labels may only name AVAILABLE versions; if one does not, the model changes
        stay applied but every model keeps its previous labels, and the reload fails (FAILED_PRECONDITION).
        A base path that is missing keeps the model's versions serving (see _poll_model).
        """
        with self._lock:
            old_labels = {name: dict(m.config.version_labels) for name, m in self._models.items()}
        removed = self._set_config(config)
        self.poll_once()
        with self._lock:
            for name in removed:
                if not any(e.servable for e in self._models[name].versions.values()):
                    del self._models[name]
            problems = self._label_problems(config.model_config_list.config)
            if problems:
                for model in config.model_config_list.config:
                    labels = self._models[model.name].config.version_labels
                    labels.clear()
                    labels.update(old_labels.get(model.name, {}))
        if problems:
            raise FailedPrecondition("; ".join(problems))

    def _label_problems(self, configs) -> list[str]:
        """TF Serving's refusal for every label naming a version that is not AVAILABLE (lock held)."""
        problems = []
        for model in configs:
            for version in model.version_labels.values():
                entry = self._models[model.name].versions.get(version)
                if entry is None or entry.state != State.AVAILABLE:
                    problems.append(
                        f"Request to assign label to version {version} of model "
                        f"{model.name}, which is not currently available for inference"
                    )
        return problems

    def label_problems(self) -> list[str]:
        """Labels of the current config that name a version not AVAILABLE (checked between polls)."""
        with self._poll_lock, self._lock:
            return self._label_problems([m.config for m in self._models.values()])

    def model_names(self) -> list[str]:
        """Configured model names."""
        with self._lock:
            return [name for name, m in self._models.items() if m.config.base_path]

    # ------------------------------------------------------------------------------------ polling
    def start(self) -> None:
        """Poll now and then every poll interval in a background thread (interval <= 0: only now)."""
        self.poll_once()
        if self._poll_wait_seconds > 0:
            self._thread = threading.Thread(target=self._poll_loop, name="model-poller", daemon=True)
            self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self._poll_wait_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 -- a poll failure must never stop future polls
                log.exception("model poll failed")

    def stop(self) -> None:
        """Stop polling and release every loaded version."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        with self._lock:
            servables = [e.servable for m in self._models.values() for e in m.versions.values() if e.servable]
        for servable in servables:
            servable.close()

    def poll_once(self) -> None:
        """One pass over every model: load aspired versions, then unload the rest (availability first)."""
        with self._poll_lock:
            with self._lock:
                models = list(self._models.items())
            for name, model in models:
                try:
                    self._poll_model(name, model)
                except Exception:  # noqa: BLE001 -- one model's failure must not stop the others' updates
                    log.exception("Polling servable %s failed (its current versions keep serving)", name)

    def _poll_model(self, name: str, model: ManagedModel) -> None:
        base = Path(model.config.base_path) if model.config.base_path else None
        try:
            dirs = list_version_dirs(base) if base else {}
        except OSError as error:  # as TF Serving: this poll fails, nothing is aspired or unaspired
            reason = (
                f"Could not find base path {base} for servable {name}"
                if isinstance(error, FileNotFoundError | NotADirectoryError)
                else f"Could not read base path {base} for servable {name}: {error.strerror or error}"
            )
            log.error("%s (its current versions keep serving)", reason)
            return
        complete = {v: p for v, p in dirs.items() if (p / "saved_model.pb").is_file()}
        if base and not complete and not model.warned_empty:
            log.warning(
                "No versions of servable %s found under base path %s. Did you forget to name your "
                "leaf directory as a number (eg. '/1/')?",
                name,
                base,
            )
            model.warned_empty = True
        aspired = aspired_versions(model.config.model_version_policy, list(complete))
        for version in sorted(aspired, reverse=True):
            entry = model.versions.get(version)
            if entry is not None and entry.state == State.AVAILABLE:
                continue
            fingerprint = version_fingerprint(complete[version])
            if (
                entry is not None
                and entry.state == State.END
                and entry.error_code != error_codes_pb2.OK
                and entry.fingerprint == fingerprint
            ):
                continue  # failed (or unloaded) before and unchanged since: do not retry in a loop
            self._load(name, model, version, complete[version], fingerprint)
        self._unload_unaspired(name, model, aspired)

    def _load(self, name: str, model: ManagedModel, version: int, path: Path, fingerprint: tuple) -> None:
        entry = VersionEntry(state=State.LOADING, fingerprint=fingerprint)
        with self._lock:
            model.versions[version] = entry
        log.info("Loading servable version {name: %s version: %d} from %s", name, version, path)
        started = time.monotonic()
        try:
            servable = self._load_servable(name, version, path)
        except Exception as error:  # noqa: BLE001 -- a bad version must never take the server down
            code = _load_error_code(error)
            message = (getattr(error, "message", None) or str(error)).strip().splitlines()
            with self._lock:
                entry.state, entry.error_code = State.END, code
                entry.error_message = message[0] if message else type(error).__name__
            log.error(
                "Failed to load servable version {name: %s version: %d}: %s (the previous version, "
                "if any, keeps serving; the directory is retried when its content changes)",
                name,
                version,
                entry.error_message,
            )
            return
        with self._lock:
            entry.servable, entry.state = servable, State.AVAILABLE
        log.info(
            "Successfully loaded servable version {name: %s version: %d} in %.2f s",
            name,
            version,
            time.monotonic() - started,
        )

    def _unload_unaspired(self, name: str, model: ManagedModel, aspired: set[int]) -> None:
        with self._lock:
            loaded = sorted(v for v, e in model.versions.items() if e.state == State.AVAILABLE)
            serving_aspired = [v for v in loaded if v in aspired]
            doomed = [v for v in loaded if v not in aspired]
            if aspired and not serving_aspired and doomed:
                doomed = doomed[:-1]  # keep the newest ready version while nothing aspired is ready
            entries = []
            for version in doomed:
                entry = model.versions[version]
                entry.state = State.UNLOADING
                entries.append((version, entry))
        for version, entry in entries:
            servable, entry.servable = entry.servable, None
            servable.close()  # in-flight requests still hold the object; it is freed when they finish
            with self._lock:
                entry.state, entry.error_code, entry.error_message = State.END, error_codes_pb2.OK, ""
            log.info("Unloaded servable version {name: %s version: %d}", name, version)

    # ----------------------------------------------------------------------------------- queries
    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request addresses (latest AVAILABLE when no version or label)."""
        with self._lock:
            model = self._models.get(name)
            if model is None or not model.config.base_path:
                if version is not None:
                    raise NotFound(f"Servable not found for request: Specific({name}, {version})")
                raise NotFound(f"Servable not found for request: Latest({name})")
            if label:
                if label not in model.config.version_labels:
                    raise InvalidArgument(f"Unrecognized servable version label: {label}")
                version = model.config.version_labels[label]
            if version is not None:
                entry = model.versions.get(version)
                if entry is None or entry.servable is None:
                    raise NotFound(f"Servable not found for request: Specific({name}, {version})")
                return entry.servable
            ready = [v for v, e in model.versions.items() if e.servable is not None]
            if not ready:
                raise NotFound(f"Servable not found for request: Latest({name})")
            return model.versions[max(ready)].servable

    def status(self, name: str, version: int | None = None) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatusResponse for every known version of a model, or one version."""
        with self._lock:
            model = self._models.get(name)
            if model is None or not model.versions:
                raise NotFound(f"Could not find any versions of model {name}")
            if version is not None and version not in model.versions:
                raise NotFound(f"Could not find version {version} of model {name}")
            response = get_model_status_pb2.GetModelStatusResponse()
            for v in sorted(model.versions) if version is None else [version]:
                entry = model.versions[v]
                item = response.model_version_status.add(version=v, state=entry.state)
                item.status.error_code = entry.error_code
                item.status.error_message = entry.error_message
            return response

    def available_versions(self) -> dict[str, list[int]]:
        """Every configured model with its AVAILABLE versions (newest last)."""
        with self._lock:
            return {
                name: sorted(v for v, e in m.versions.items() if e.state == State.AVAILABLE)
                for name, m in self._models.items()
                if m.config.base_path
            }

    def is_ready(self) -> bool:
        """True when every configured model has an AVAILABLE version."""
        return all(self.available_versions().values())

    def startup_failures(self) -> dict[str, str]:
        """Models with no AVAILABLE version whose every aspired version failed: name -> error."""
        failures = {}
        with self._lock:
            for name, model in self._models.items():
                entries = model.versions.values()
                if model.config.base_path and entries and all(e.state == State.END for e in entries):
                    failures[name] = "; ".join(e.error_message for e in entries if e.error_message)
        return failures

    def labels(self, name: str) -> dict[str, int]:
        """The version labels configured for a model."""
        with self._lock:
            model = self._models.get(name)
            return dict(model.config.version_labels) if model else {}
