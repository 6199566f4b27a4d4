"""Configuration: frozen dataclasses, read from YAML and `key=value` overrides, checked early.

Each job has one dataclass (training, extraction, evaluation, synthesis); they live next to the
code that uses them and share the helpers here. `StorageConfig` is shared by every job.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

MAX_SETTINGS_BYTES = 1 << 20  # a settings file; real ones are a few hundred bytes
MAX_SETTINGS_DEPTH = 16  # nesting of a settings document; the deepest setting is 3 levels down
MAX_INT = (1 << 63) - 1  # what Arrow, numpy and torch hold; every integer setting is within ±this
MAX_WAIT_S = 3600.0  # a timeout or a wait between retries
MAX_OBJECT_BYTES = 16 << 30
MAX_RETRIES = 100


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


class SetupError(ConfigError):
    """Storage, bundle or output cannot be reached or used as configured; nothing was touched."""


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
        # Every wait and size is bounded: `.inf` or a typo's extra digits would hang or exhaust a job.
        for name, most in (("connect_timeout_s", MAX_WAIT_S), ("request_timeout_s", MAX_WAIT_S),
                           ("retry_backoff_s", MAX_WAIT_S), ("retry_max_wait_s", MAX_WAIT_S),
                           ("retries", MAX_RETRIES), ("max_object_bytes", MAX_OBJECT_BYTES)):
            if not getattr(self, name) <= most:
                raise ConfigError(f"storage.{name} must be at most {most:g}, got {getattr(self, name)!r}")
        if self.endpoint_url and any(c in self.endpoint_url for c in "@?#"):
            # Never echo it: it may carry a credential. Any '@' counts, not only one before the
            # first '/': a secret key may hold '/' ('http://AKIA…:wJal/K7MD@host'), and what
            # parsers take for the user-info differs. A query or fragment may carry a signature.
            raise ConfigError("storage.endpoint_url must be http(s)://host[:port] with no user:password@, '@', "
                              "query or fragment; credentials come from the standard AWS environment, profile "
                              "or instance role")
        for prefix in self.allowed_prefixes:
            _check_prefix(prefix)

    @classmethod
    def from_env(cls, env: typing.Mapping[str, str] | None = None, **overrides: Any) -> "StorageConfig":
        env = os.environ if env is None else env
        values: dict[str, Any] = {
            "endpoint_url": env.get("ATTRGAN_S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL"),
            "region": env.get("ATTRGAN_S3_REGION") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
            "anonymous": _coerce("ATTRGAN_S3_ANONYMOUS", bool, env.get("ATTRGAN_S3_ANONYMOUS") or "false"),
            "profile": env.get("AWS_PROFILE"),
        }
        if "ATTRGAN_S3_PATH_STYLE" in env:
            values["path_style"] = _coerce("ATTRGAN_S3_PATH_STYLE", bool, env["ATTRGAN_S3_PATH_STYLE"])
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
    """true or false only: 1, yes and on are a number and words, not a switch's state."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in ("true", "false"):
        return text == "true"
    raise ConfigError(f"expected a boolean (true/false), got {_short(value)}")


def _short(value: Any) -> str:
    """repr of a refused value, on one line and at most 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 and "\n" not in text else text.replace("\n", " ")[:80] + "…"


_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)  # unambiguous: linear


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
        if isinstance(value, str) and not _DECIMAL.fullmatch(value.strip()):
            # float() would also take "1_0.0", "inf" and non-ASCII digits such as "１６".
            raise ConfigError(f"{name}: expected a decimal number, got {_short(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if number != number:
            raise ConfigError(f"{name}: expected a number, got NaN")
        if not math.isfinite(number):
            raise ConfigError(f"{name}: expected a finite number, got {_short(value)}")
        return number
    return value


def _parse_int(name: str, value: int | float | str) -> int:
    """Decimal integers of ASCII digits only, within ±MAX_INT: 16 and "16" are 16; 16.0, 1e3, 0x10,
    "１６" and inf are refused (a number written with a point or an exponent is not a count)."""
    if isinstance(value, float):
        raise ConfigError(f"{name}: expected an integer, got {_short(value)}")
    if isinstance(value, str):
        if not re.fullmatch(r"\s*[+-]?[0-9]{1,19}\s*", value, re.ASCII):
            raise ConfigError(f"{name}: expected a decimal integer, got {_short(value)}")
        value = int(value)
    if not -MAX_INT <= value <= MAX_INT:
        raise ConfigError(f"{name}: {_short(value)} is out of range (at most {MAX_INT})")
    return value


def from_dict(cls: type[T], values: typing.Mapping[str, Any], *, prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and bad types raise ConfigError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if not isinstance(values, typing.Mapping) or not all(isinstance(k, str) for k in values):
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: expected a mapping of setting names")
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown setting(s) {[prefix + k for k in unknown]}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(prefix + k, hints[k], v) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from None


class _Refused(yaml.YAMLError):
    """YAML that is valid but not allowed in settings."""


class _Loader(yaml.SafeLoader):
    """YAML 1.1's safe loader for settings, stricter where YAML 1.1 surprises:

    - integers are ASCII decimal numerals and floats decimal ones with a point or an exponent
      (and .inf / .nan, refused later as not finite): `0x10`, `0o20`, `1_000`, `1:30` (base 60)
      and `1_0.0` stay strings, and are then refused where a number is expected;
    - booleans are only true / false: `yes`, `on`, `y` and `no` stay strings;
    - dates stay strings (`since: 2026-11-01` is the string the setting takes);
    - anchors and aliases are refused: an alias bomb of a few hundred bytes expands to billions of
      values; so are explicit tags (`!!int 0x10`), which would bring YAML 1.1's typing back;
      documents nest at most MAX_SETTINGS_DEPTH levels.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(f"anchors and aliases (&name, *name) are not allowed in settings (line {event.start_mark.line + 1})")
        if getattr(event, "tag", None) is not None:  # `!!int 0x10`, `!!bool yes`: the typing below, bypassed
            raise _Refused(f"explicit tags ({event.tag}) are not allowed in settings (line {event.start_mark.line + 1})")
        self._depth += 1
        if self._depth > MAX_SETTINGS_DEPTH:
            raise _Refused(f"nests deeper than {MAX_SETTINGS_DEPTH} levels (line {event.start_mark.line + 1})")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_RESOLVED_HERE = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
                  "tag:yaml.org,2002:timestamp")
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _RESOLVED_HERE]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except _Refused as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:  # the scanner's own recursion, before any node is composed
        raise ConfigError(f"{where}: nests deeper than {MAX_SETTINGS_DEPTH} levels") from None
    except ValueError:  # an integer of more digits than Python converts
        raise ConfigError(f"{where}: holds a number too long to be a setting") from None


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
            if not isinstance(node, dict):
                raise ConfigError(f"override {key.strip()!r}: {p!r} is given a value elsewhere, so it has no settings")
        node[leaf] = _yaml(raw, item if item.isprintable() else repr(item))  # an error stays one line
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
            with open(path, "rb") as f:
                data = f.read(MAX_SETTINGS_BYTES + 1)
            if len(data) > MAX_SETTINGS_BYTES:
                raise ConfigError(f"the settings file {path} is over {MAX_SETTINGS_BYTES} bytes: not a settings file")
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the settings file {path}: {getattr(exc, 'strerror', None) or exc}") from None
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
