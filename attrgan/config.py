"""Configuration: frozen dataclasses, read from YAML and `key=value` overrides, checked early.

Each job has one dataclass (training, extraction, evaluation, synthesis); they live next to the
code that uses them and share the helpers here. `StorageConfig` is shared by every job.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


@dataclasses.dataclass(frozen=True)
class StorageConfig:
    """How to reach object storage. Shared by every job.

    Values come from (later wins): defaults, the standard AWS environment (`AWS_ENDPOINT_URL`,
    `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_PROFILE`), `ATTRGAN_S3_*` variables, then the job's
    YAML `storage:` section. Credentials are never stored here: s3fs and pyarrow read them from the
    standard AWS environment, profile or instance role, so they never reach logs or job arguments.
    """

    endpoint_url: str | None = None  # e.g. http://127.0.0.1:5000 for MinIO / moto / Ceph
    region: str | None = None
    anonymous: bool = False  # public buckets
    path_style: bool | None = None  # None: path style exactly when endpoint_url is set
    profile: str | None = None
    # Object-store prefixes manifest rows may point at (`s3://bucket/prefix`). Empty: any
    # prefix under the manifest's own bucket. `file://` rows are refused unless "file://" is listed.
    allowed_prefixes: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: typing.Mapping[str, str] | None = None, **overrides: Any) -> "StorageConfig":
        env = os.environ if env is None else env
        values: dict[str, Any] = {
            "endpoint_url": env.get("ATTRGAN_S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL"),
            "region": env.get("ATTRGAN_S3_REGION") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
            "anonymous": _parse_bool(env.get("ATTRGAN_S3_ANONYMOUS", "false")),
            "profile": env.get("AWS_PROFILE"),
        }
        if "ATTRGAN_S3_PATH_STYLE" in env:
            values["path_style"] = _parse_bool(env["ATTRGAN_S3_PATH_STYLE"])
        if env.get("ATTRGAN_ALLOWED_PREFIXES"):
            values["allowed_prefixes"] = tuple(p.strip() for p in env["ATTRGAN_ALLOWED_PREFIXES"].split(",") if p.strip())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return from_dict(cls, values)

    @property
    def use_path_style(self) -> bool:
        return bool(self.endpoint_url) if self.path_style is None else self.path_style


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"expected a boolean (true/false), got {value!r}")


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Coerce a YAML / command-line value to a dataclass field's type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        if origin in (typing.Union, types.UnionType) and type(None) in args:
            return None
        raise ConfigError(f"{name}: a value is required")
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        errors = []
        for a in non_none:
            try:
                return _coerce(name, a, value)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{name}: bad value {value!r}")
    if typing.get_origin(tp) is typing.Literal:
        if value not in args:
            raise ConfigError(f"{name}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{name}.")
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        if len(args) == 2 and args[1] is Ellipsis or len(args) <= 1:
            return tuple(_coerce(f"{name}[{i}]", item_tp, v) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{name}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(f"{name}[{i}]", a, v) for i, (a, v) in enumerate(zip(args, value)))
    if tp is bool:
        try:
            return _parse_bool(value)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    if tp in (int, float, str):
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        if tp is str and not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected {tp.__name__}, got {value!r}") from None
    return value


def from_dict(cls: type[T], values: typing.Mapping[str, Any], *, prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and bad types raise ConfigError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown setting(s) {[prefix + k for k in unknown]}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(prefix + k, hints[k], v) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from None


def parse_overrides(items: typing.Iterable[str]) -> dict[str, Any]:
    """`["optim.lr=0.01", "epochs=3"]` → nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override must look like key=value, got {item!r}")
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(raw)
    return out


def merge(base: dict[str, Any], extra: typing.Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge `extra` into a copy of `base`."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, typing.Mapping) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def load(cls: type[T], path: str | Path | None = None, overrides: typing.Mapping[str, Any] | None = None,
         *, base: typing.Mapping[str, Any] | None = None) -> T:
    """`base` (e.g. a preset) ← YAML file at `path` ← `overrides`, validated into `cls`."""
    values: dict[str, Any] = dict(base or {})
    if path is not None:
        text = Path(path).read_text()
        loaded = yaml.safe_load(text) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a YAML mapping at the top level")
        values = merge(values, loaded)
    values = merge(values, overrides or {})
    return from_dict(cls, values)


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as plain JSON/YAML-friendly data (tuples become lists)."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(config))
