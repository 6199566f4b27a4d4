"""Configuration: frozen dataclasses, read from YAML and `key=value` overrides, checked early.

Each job has one dataclass (training, extraction, evaluation, synthesis); they live next to the
code that uses them and share the helpers here. `StorageConfig` is shared by every job.
"""

from __future__ import annotations

import dataclasses
import os
import re
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
    # Where manifest rows may point: `s3://bucket[/prefix]` entries, absolute local folders
    # (`/data/frames`), or "file://" for every local path. Empty: any key in the manifest's own
    # bucket, and no local file at all for a manifest on S3.
    allowed_prefixes: tuple[str, ...] = ()
    # Bounds on what a job reads and how long it waits (docs/security.md).
    max_object_bytes: int = 64 << 20  # an image or bundle file larger than this is refused unread
    connect_timeout_s: float = 10.0
    request_timeout_s: float = 30.0  # a transfer that stalls this long fails (and is retried)
    retries: int = 4  # further attempts of an object-store read/write that failed transiently
    retry_backoff_s: float = 0.2  # first wait; doubles each retry, with jitter
    retry_max_wait_s: float = 20.0  # waiting in all per object, whatever `retries` says

    def __post_init__(self) -> None:
        for name in ("max_object_bytes", "connect_timeout_s", "request_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"storage.{name} must be positive, got {getattr(self, name)!r}")
        for name in ("retries", "retry_backoff_s", "retry_max_wait_s"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"storage.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.endpoint_url and "@" in self.endpoint_url.partition("://")[2].partition("/")[0]:
            # Never echo it: the part before '@' is a credential.
            raise ConfigError("storage.endpoint_url must not carry user:password@; credentials come from the "
                              "standard AWS environment, profile or instance role")
        for prefix in self.allowed_prefixes:
            _check_prefix(prefix)

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


def _check_prefix(prefix: str) -> None:
    """An allowed_prefixes entry that can match something, or ConfigError saying what to write."""
    how = ("write s3://bucket[/prefix] for objects, an absolute folder such as /data/frames for local "
           "files, or file:// for every local path")
    if not isinstance(prefix, str):
        raise ConfigError(f"storage.allowed_prefixes: expected strings, got {prefix!r}")
    if prefix == "file://":
        return
    head, sep, rest = prefix.partition("://")
    if sep and head.lower() == "s3":
        bucket, _, key = rest.partition("/")
        if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-]*", bucket) and ".." not in key.split("/"):
            return
        raise ConfigError(f"storage.allowed_prefixes: {prefix!r} names no valid bucket; {how}")
    if sep and head.lower() == "file":
        raise ConfigError(f"storage.allowed_prefixes: {prefix!r} can match nothing (image URIs are compared "
                          f"as paths); write {rest!r} instead")
    if not sep and prefix.startswith("/") and ".." not in prefix.split("/"):
        return
    if not sep and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-]*(/.*)?", prefix):
        raise ConfigError(f"storage.allowed_prefixes: {prefix!r} can match nothing; write 's3://{prefix}' "
                          f"for a bucket, or an absolute path for a local folder")
    raise ConfigError(f"storage.allowed_prefixes: {prefix!r} can match nothing; {how}")


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
        if tp is str:
            if not isinstance(value, str):
                raise ConfigError(f"{name}: expected a string, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            # true is not 1: a boolean in a number's place is a mistake in the YAML.
            raise ConfigError(f"{name}: expected {tp.__name__}, got {value!r}")
        if tp is int:
            return _parse_int(name, value)
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{name}: expected {tp.__name__}, got {value!r}") from None
        if number != number:
            raise ConfigError(f"{name}: expected a number, got NaN")
        return number
    return value


def _parse_int(name: str, value: int | float | str) -> int:
    """Decimal integers only: 16, 16.0 and "16" are 16; 0x10, 1e3 as text, 16.5 and inf are refused."""
    if isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return int(value)
    if isinstance(value, str):
        if not re.fullmatch(r"\s*[+-]?\d+\s*", value):
            raise ConfigError(f"{name}: expected a decimal integer, got {value!r}")
        return int(value)
    return int(value)


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


class _Loader(yaml.SafeLoader):
    """YAML 1.1's safe loader, except that only decimal numerals are integers: `0x10`, `0o20`,
    `1_000` and `1:30` stay strings (and are then refused where a number is expected)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?(0|[1-9][0-9]*)$"), list("-+0123456789"))


def _yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None


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
        node[leaf] = _yaml(raw, item)
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
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the settings file {path}: {exc.strerror or exc}") from None
        loaded = _yaml(text, str(path)) or {}
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
