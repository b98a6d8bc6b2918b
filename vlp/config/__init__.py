"""The run configuration: a typed tree of dataclasses, read from YAML plus ``key.sub=value`` overrides.

Every key is checked before anything is written: an unknown key (with a suggestion), a value of the
wrong type or out of range raises :class:`ConfigError` naming the key. The full tree is printed at
start and saved as ``config.yaml`` next to the checkpoints.
"""

from .checks import generated_eval_sets, validate
from .loading import load_config, parse_override, to_dict, to_yaml
from .schema import (
    PRECISIONS,
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    LogConfig,
    ModelConfig,
    ObjectiveConfig,
    ProtoConfig,
    TrainConfig,
)

__all__ = [
    "PRECISIONS",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LogConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "ProtoConfig",
    "TrainConfig",
    "generated_eval_sets",
    "load_config",
    "parse_override",
    "to_dict",
    "to_yaml",
    "validate",
]
