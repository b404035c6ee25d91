"""Parse TF Serving's text-proto config files: ModelServerConfig, BatchingParameters, MonitoringConfig."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2


class ConfigError(Exception):
    """A config file that cannot be read or does not describe a valid configuration."""


def _build_missing_protos() -> tuple[type, type]:
    """Build BatchingParameters and MonitoringConfig, which the pip package does not ship.

    Field names, types and numbers follow TF Serving's session_bundle_config.proto and
    monitoring_config.proto, so text_format accepts exactly the files tensorflow_model_server accepts.
    """
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="digits_serving/config_protos.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    f = descriptor_pb2.FieldDescriptorProto
    batching = proto.message_type.add(name="BatchingParameters")
    wrapped = [
        ("max_batch_size", 1, "Int64Value"),
        ("batch_timeout_micros", 2, "Int64Value"),
        ("max_enqueued_batches", 3, "Int64Value"),
        ("num_batch_threads", 4, "Int64Value"),
        ("thread_pool_name", 5, "StringValue"),
        ("enable_large_batch_splitting", 8, "BoolValue"),
        ("max_execution_batch_size", 9, "Int64Value"),
    ]
    for name, number, wrapper in wrapped:
        batching.field.add(
            name=name,
            number=number,
            type=f.TYPE_MESSAGE,
            label=f.LABEL_OPTIONAL,
            type_name=f".google.protobuf.{wrapper}",
        )
    batching.field.add(name="allowed_batch_sizes", number=6, type=f.TYPE_INT64, label=f.LABEL_REPEATED)
    batching.field.add(name="pad_variable_length_inputs", number=7, type=f.TYPE_BOOL, label=f.LABEL_OPTIONAL)
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=f.TYPE_BOOL, label=f.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        type=f.TYPE_MESSAGE,
        label=f.LABEL_OPTIONAL,
        type_name=".tensorflow.serving.PrometheusConfig",
    )
    pool.Add(proto)

    def message_class(name: str) -> type:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))

    return message_class("BatchingParameters"), message_class("MonitoringConfig")


BatchingParameters, MonitoringConfig = _build_missing_protos()
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


def _parse_text_proto(path: str | Path, message, what: str):
    """Read one text-proto file into `message`, turning every failure into a one-line ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read {what} file {path}: {error}") from None
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise ConfigError(f"invalid {what} file {path}: {error}") from None
    return message


def parse_model_server_config(text: str, source: str = "<text>") -> model_server_config_pb2.ModelServerConfig:
    """Parse and validate ModelServerConfig text (only model_config_list is supported, as in TF Serving)."""
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ConfigError(f"invalid model config file {source}: {error}") from None
    validate_model_server_config(config, source)
    return config


def validate_model_server_config(config, source: str = "<config>") -> None:
    """Reject configs TF Serving would reject: custom configs, duplicate or empty names, bad platforms."""
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigError(
            f"{source}: ModelServerConfig must have a model_config_list "
            "(custom_model_config is not supported)"
        )
    seen: set[str] = set()
    for model in config.model_config_list.config:
        if not model.name:
            raise ConfigError(f"{source}: every model config needs a name")
        if model.name in seen:
            raise ConfigError(f"{source}: Illegal to list model {model.name} multiple times in config list")
        seen.add(model.name)
        if not model.base_path:
            raise ConfigError(f"{source}: model {model.name} has no base_path")
        if model.model_platform and model.model_platform != "tensorflow":
            raise ConfigError(
                f"{source}: model {model.name}: unsupported model_platform "
                f"{model.model_platform!r} (only 'tensorflow')"
            )
        policy = model.model_version_policy
        if policy.WhichOneof("policy_choice") == "latest" and policy.latest.num_versions < 0:
            raise ConfigError(f"{source}: model {model.name}: latest.num_versions must be >= 0")


def read_model_server_config(path: str | Path) -> model_server_config_pb2.ModelServerConfig:
    """Read --model_config_file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read model config file {path}: {error}") from None
    return parse_model_server_config(text, str(path))


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    """The config --model_name/--model_base_path stand for (TF Serving's BuildSingleModelConfig)."""
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name=name, base_path=base_path, model_platform="tensorflow")
    return config


def read_batching_parameters(path: str | Path):
    """Read --batching_parameters_file and check it as TF Serving's bundle_factory_util does."""
    params = _parse_text_proto(path, BatchingParameters(), "batching parameters")
    max_batch = params.max_batch_size.value if params.HasField("max_batch_size") else 1000
    sizes = list(params.allowed_batch_sizes)
    if max_batch <= 0:
        raise ConfigError(f"{path}: max_batch_size must be positive")
    splitting = params.HasField("enable_large_batch_splitting") and params.enable_large_batch_splitting.value
    execution_batch = max_batch
    if splitting and params.HasField("max_execution_batch_size"):
        execution_batch = params.max_execution_batch_size.value
    if sizes:
        if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)) or sizes[0] <= 0:
            raise ConfigError(f"{path}: allowed_batch_sizes entries must be positive and increasing")
        if sizes[-1] != execution_batch:
            # TF Serving: with enable_large_batch_splitting the batches run at max_execution_batch_size.
            what = "max_execution_batch_size" if execution_batch != max_batch else "max_batch_size"
            raise ConfigError(
                f"{path}: Last entry in allowed_batch_sizes must match {what}; last entry was "
                f"{sizes[-1]}; expected {execution_batch}"
            )
    for field in ("num_batch_threads", "max_enqueued_batches", "max_execution_batch_size"):
        if params.HasField(field) and getattr(params, field).value <= 0:
            raise ConfigError(f"{path}: {field} must be positive")
    if params.HasField("batch_timeout_micros") and params.batch_timeout_micros.value < 0:
        raise ConfigError(f"{path}: batch_timeout_micros must be >= 0")
    return params


def read_monitoring_config(path: str | Path):
    """Read --monitoring_config_file."""
    return _parse_text_proto(path, MonitoringConfig(), "monitoring config")
