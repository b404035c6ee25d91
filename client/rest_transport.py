"""TF Serving's REST/JSON API over one reused `requests.Session`."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import numpy as np
import requests
from requests.adapters import HTTPAdapter

from client import contract
from client.errors import (
    BadTarget,
    ClientError,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    ServerError,
    ServerUnavailable,
)
from client.model_client import (
    ClientConfig,
    ModelClient,
    ModelMetadata,
    Prediction,
    TensorSpec,
    VersionStatus,
)

# What requests raises for a target it cannot even parse, e.g. "localhost:notaport" or "http://".
BAD_ADDRESS = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.URLRequired,
)


class RestModelClient(ModelClient):
    """`/v1/models/<name>[/versions/N | /labels/L]` endpoints as in TF Serving's REST API."""

    def __init__(self, config: ClientConfig) -> None:
        super().__init__(config)
        target = config.target
        self.base_url = target.rstrip("/") if "://" in target else f"http://{target}"
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=config.pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    def _model_url(self, version: int | None, label: str | None) -> str:
        url = f"{self.base_url}/v1/models/{quote(self.config.model_name, safe='')}"
        if version is not None:
            url += f"/versions/{int(version)}"
        elif label is not None:
            url += f"/labels/{quote(label, safe='')}"
        return url

    def _predict(self, images: np.ndarray, version: int | None, label: str | None) -> Prediction:
        # Columnar ("inputs") format: the answer comes back as one array per output, no per-row objects.
        body = {
            "signature_name": self.config.signature_name,
            "inputs": {contract.INPUT_NAME: images.tolist()},
        }
        answer = self._call("POST", self._model_url(version, label) + ":predict", json.dumps(body))
        outputs = answer.get("outputs")
        if not isinstance(outputs, dict):
            raise ServerError(f"predict answer has no 'outputs' object: {str(answer)[:200]}")
        try:
            probabilities = np.asarray(outputs[contract.OUTPUT_PROBABILITIES], dtype=np.float32)
            classes = np.asarray(outputs[contract.OUTPUT_CLASSES], dtype=np.int64)
        except (KeyError, ValueError, TypeError) as err:
            raise ServerError(f"predict answer lacks the expected outputs: {err}") from None
        return Prediction(probabilities, classes, self.config.model_name, version)

    def _status(self, version: int | None) -> list[VersionStatus]:
        answer = self._call("GET", self._model_url(version, None))
        return [
            VersionStatus(
                version=int(entry["version"]),
                state=entry.get("state", "UNKNOWN"),
                error_code=entry.get("status", {}).get("error_code", "OK"),
                error_message=entry.get("status", {}).get("error_message", ""),
            )
            for entry in answer.get("model_version_status", [])
        ]

    def _metadata(self, version: int | None, label: str | None) -> ModelMetadata:
        answer = self._call("GET", self._model_url(version, label) + "/metadata")
        spec = answer.get("model_spec", {})
        signatures = answer.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
        name = self.config.signature_name
        if name not in signatures:
            raise ModelNotFound(f"model {self.config.model_name!r} has no signature {name!r}")
        signature = signatures[name]
        served_version = spec.get("version")
        return ModelMetadata(
            model_name=spec.get("name", self.config.model_name),
            model_version=int(served_version) if served_version not in (None, "") else None,
            signature_name=name,
            inputs={k: _tensor_spec(v) for k, v in signature.get("inputs", {}).items()},
            outputs={k: _tensor_spec(v) for k, v in signature.get("outputs", {}).items()},
        )

    def _call(self, method: str, url: str, data: str | None = None) -> dict:
        """One HTTP exchange; errors become typed exceptions with the server's message."""
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            reply = self.session.request(
                method, url, data=data, headers=headers, timeout=self.config.timeout_s
            )
        except requests.Timeout as err:
            raise DeadlineExceeded(f"no answer from {self.base_url} within {self.config.timeout_s}s") from err
        except requests.ConnectionError as err:
            raise ServerUnavailable(f"cannot connect to {self.base_url}: {_root_cause(err)}") from err
        except requests.exceptions.InvalidProxyURL as err:  # an InvalidURL too: the proxy's, not the target's
            proxies = "HTTP_PROXY / HTTPS_PROXY / ALL_PROXY"
            raise BadTarget(f"the proxy setting for {self.base_url} ({proxies}) is not valid: {err}") from err
        except BAD_ADDRESS as err:
            raise BadTarget(f"the model server address {self.config.target!r} is not valid: {err}") from err
        except requests.RequestException as err:
            raise ServerError(f"request to {self.base_url} failed: {type(err).__name__}: {err}") from err
        try:
            answer = reply.json()
        except ValueError:
            answer = None
        if reply.status_code == 200 and isinstance(answer, dict):
            return answer
        message = answer.get("error") if isinstance(answer, dict) else None
        message = message or f"HTTP {reply.status_code} from {url}: {reply.text[:200]!r}"
        raise _http_error(reply.status_code, message)


def _http_error(status: int, message: str) -> ClientError:
    code = str(status)
    if status == 404:
        return ModelNotFound(message, code=code)
    if status == 400 and "version label" in message:
        return ModelNotFound(message, code=code)  # TF Serving answers 400 for an unknown label
    if status in (400, 413, 422):
        return InvalidInput(message, code=code)
    if status == 503:
        return ServerUnavailable(message, code=code)
    if status == 504:
        return DeadlineExceeded(message, code=code)
    return ServerError(message, code=code)


def _tensor_spec(info: dict) -> TensorSpec:
    shape = info.get("tensor_shape", {})
    if shape.get("unknown_rank"):
        return TensorSpec(info.get("dtype", "DT_INVALID"), None)
    dims = tuple(int(d.get("size", -1)) for d in shape.get("dim", []))
    return TensorSpec(info.get("dtype", "DT_INVALID"), dims)


def _root_cause(err: BaseException) -> str:
    """The OS-level reason inside requests' long wrapped message, e.g. "[Errno 111] Connection refused"."""
    found = re.search(r"\[Errno -?\d+\] [^'\")]+", str(err))
    return found.group(0) if found else type(err).__name__
