"""The gateway's settings: defaults, then `DIGITS_*` environment variables, then test overrides."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from client import contract
from client.model_client import PROTOCOLS, ClientConfig
from client.preprocess import ImageLimits

DEFAULTS = {
    "MODEL_SERVER": None,  # host:port; None: localhost on the protocol's default port
    "PROTOCOL": "grpc",
    "MODEL_NAME": contract.DEFAULT_MODEL_NAME,
    "MODEL_VERSION": None,
    "VERSION_LABEL": None,
    "DATASET": "mnist",  # which class names to answer with (contract.CLASS_NAMES)
    "TIMEOUT_S": 5.0,
    "RETRIES": 2,
    "MAX_CONTENT_LENGTH": 8 * 1024 * 1024,  # Flask's own key: bigger bodies get 413
    "MAX_IMAGE_PIXELS": 16_000_000,
    "MAX_IMAGE_SIDE": 8_192,
    "MAX_BATCH_IMAGES": 256,
    "AUTH_TOKEN": None,  # when set and not empty, /v1/* needs "Authorization: Bearer <token>"
}
# Taken verbatim from the environment: Flask parses DIGITS_* values as JSON, which would turn a token
# "null" into None (authentication off) and "1e3" into 1000.0.
STRING_SETTINGS = ("MODEL_SERVER", "PROTOCOL", "MODEL_NAME", "VERSION_LABEL", "DATASET", "AUTH_TOKEN")
ENV_PREFIX = "DIGITS_"


@dataclass(frozen=True)
class GatewaySettings:
    """Typed view of the gateway's Flask config."""

    model_server: str
    protocol: str
    model_name: str
    model_version: int | None
    version_label: str | None
    dataset: str
    timeout_s: float
    retries: int
    max_content_length: int
    max_image_pixels: int
    max_image_side: int
    max_batch_images: int
    auth_token: str | None

    @classmethod
    def from_config(cls, config: dict) -> GatewaySettings:
        """Validate and convert the (env-parsed, hence loosely typed) Flask config."""
        protocol = str(config["PROTOCOL"]).lower()
        if protocol not in PROTOCOLS:
            raise ValueError(f"DIGITS_PROTOCOL must be one of {PROTOCOLS}, not {protocol!r}")
        default_port = contract.GRPC_PORT if protocol == "grpc" else contract.REST_PORT
        dataset = str(config["DATASET"])
        if dataset not in contract.CLASS_NAMES:
            raise ValueError(f"DIGITS_DATASET must be one of {sorted(contract.CLASS_NAMES)}, not {dataset!r}")
        return cls(
            model_server=str(config["MODEL_SERVER"] or f"localhost:{default_port}"),
            protocol=protocol,
            model_name=str(config["MODEL_NAME"]),
            model_version=_optional_version(config),
            version_label=str(config["VERSION_LABEL"]) if config["VERSION_LABEL"] else None,
            dataset=dataset,
            timeout_s=_number(config, "TIMEOUT_S", float, above=0),
            retries=_number(config, "RETRIES", int, above=-1),
            max_content_length=_number(config, "MAX_CONTENT_LENGTH", int, above=0),
            max_image_pixels=_number(config, "MAX_IMAGE_PIXELS", int, above=0),
            max_image_side=_number(config, "MAX_IMAGE_SIDE", int, above=0),
            max_batch_images=_number(config, "MAX_BATCH_IMAGES", int, above=0),
            auth_token=_auth_token(config["AUTH_TOKEN"]),
        )

    @property
    def client_config(self) -> ClientConfig:
        """How to reach the model server."""
        return ClientConfig(
            target=self.model_server,
            protocol=self.protocol,
            model_name=self.model_name,
            model_version=self.model_version,
            version_label=self.version_label,
            timeout_s=self.timeout_s,
            retries=self.retries,
            batch_size=self.max_batch_images,
        )

    @property
    def image_limits(self) -> ImageLimits:
        """What an uploaded picture may be."""
        return ImageLimits(max_pixels=self.max_image_pixels, max_side=self.max_image_side)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The names to answer with, by class index."""
        return contract.CLASS_NAMES[self.dataset]


def env_strings(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The string settings present in the environment, exactly as written there."""
    return {key: environ[ENV_PREFIX + key] for key in STRING_SETTINGS if ENV_PREFIX + key in environ}


def _auth_token(value: object) -> str | None:
    """None (authentication off) when unset or empty; a token padded with whitespace is refused.

    Empty means off because compose files pass `DIGITS_AUTH_TOKEN: ${DIGITS_AUTH_TOKEN:-}`; a padded
    token (or whitespace only) is a mistake no request could ever match, so it stops the start.
    """
    if value is None or value == "":
        return None
    token = str(value)
    if token != token.strip():
        raise ValueError(
            "DIGITS_AUTH_TOKEN starts or ends with whitespace, so no request could match it; "
            "remove the whitespace, or set it empty (or unset it) to run without authentication"
        )
    return token


def _optional_version(config: Mapping) -> int | None:
    """DIGITS_MODEL_VERSION: unset or empty for the newest version, else a version number."""
    return None if config["MODEL_VERSION"] in (None, "") else _number(config, "MODEL_VERSION", int, above=-1)


def _number(config: Mapping, key: str, kind: type, above: int) -> int | float:
    """config[key] as an int or a finite float above `above`; a ValueError naming the variable otherwise."""
    value = config[key]
    try:
        number = kind(value)
        valid = not isinstance(value, bool) and math.isfinite(number) and number > above
        valid = valid and (kind is float or number == float(value))  # 2.5 (from JSON) is no integer
    except (TypeError, ValueError, OverflowError):
        valid = False
    if not valid:
        noun = "an integer" if kind is int else "a number"
        least = f"at least {above + 1}" if kind is int else f"above {above}"
        raise ValueError(f"{ENV_PREFIX}{key} must be {noun} {least}, not {value!r}")
    return number
