"""The one place that turns a URI and a `StorageConfig` into a filesystem.

One module on purpose (it is long): every storage call's limits, retries and redaction live
together, so that no call escapes them.

Supported locations:

- `s3://bucket/key` — object storage (AWS S3 or any S3-compatible endpoint: MinIO, Ceph, moto),
  reached with the settings of `StorageConfig` (endpoint, region, anonymous access, path-style
  addressing). Credentials are never passed here: pyarrow and s3fs read them from the standard
  AWS environment, profile or instance role, so they never appear in logs or error messages.
- `file:///abs/path` and plain paths (absolute or relative to the working directory) — the
  local disk. `file://` URIs are taken literally (no percent-decoding).

Two flavours of filesystem are offered, both cached per process and per `StorageConfig`:
`filesystem()` gives a `pyarrow.fs.FileSystem` (Parquet datasets, and the byte helpers below:
its S3 client is thread-safe and fast), `fsspec_filesystem()` gives an fsspec filesystem (s3fs)
for libraries that want one (pandas, Ray Data's `filesystem=`, DuckDB). The caches are keyed by
the process id, so a forked child or a Ray worker builds its own clients instead of inheriting
sockets and locks from its parent.

Reading objects (`read_bytes`) is bounded: at most `StorageConfig.max_object_bytes` (from the
object's size before any byte is read, and again while reading), only regular local files (no
devices, FIFOs, /proc or /sys), with connect / request timeouts on every object-store call. Reads
and writes retry timeouts, dropped connections, 5xx and throttling with exponential backoff and
jitter (`retries`, `retry_backoff_s`, `retry_max_wait_s`); a failure that outlasts them raises
`TransientStorageError`, permanent ones (missing, denied, too large) raise at once. The SDKs do
not retry inside that loop (`filesystem(..., sdk_retries=False)`), so one call is bounded by
attempts x (connect + request timeout) + the waits (docs/security.md). Messages go through
`redact`: no credential, no unbounded length.
"""

from __future__ import annotations

import heapq
import os
import posixpath
import random
import re
import stat
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from attrgan.config import StorageConfig

if TYPE_CHECKING:
    import fsspec

SUPPORTED_SCHEMES = ("s3://", "file://", "plain local paths")

_lock = threading.Lock()
_pyarrow_cache: dict[tuple[int, StorageConfig, bool], pafs.FileSystem] = {}
_fsspec_cache: dict[tuple[int, StorageConfig], "fsspec.AbstractFileSystem"] = {}
_botocore_cache: dict[tuple[int, StorageConfig], Any] = {}
_LOCAL = pafs.LocalFileSystem()
_CHUNK = 8 << 20  # bytes read at a time, so a size limit stops a read within one chunk
# Local trees that hold no images, only kernel state that reads differently from what stat says.
_PSEUDO_ROOTS = ("/proc", "/sys", "/dev")
T = TypeVar("T")


class TransientStorageError(OSError):
    """An object-store call kept failing for a reason that may pass (timeout, dropped connection,
    5xx, throttling) after every retry; the same call can succeed in a later run."""


class ObjectRefusedError(OSError):
    """An object that is never read: larger than `max_object_bytes`, or not a regular file."""


# Redaction finds what to hide with `find` / `rfind` over UTF-8 bytes (no regex that could
# backtrack), so its time is linear in the length of the text.
# Names of query parameters and header fields whose value is a credential or a signature, matched
# in any case as the end of a name before '=': X-Amz-Signature, X-Amz-Credential,
# X-Amz-Security-Token, Signature, AWSAccessKeyId, X-Goog-Signature, sig (Azure SAS), ...
_SECRET_PARAMS = tuple(f"{name}=".encode() for name in (
    "signature", "credential", "token", "accesskeyid", "sig", "password", "secret", "secretkey",
    "secret_key", "secret_access_key", "apikey", "api_key"))
# Lower-cases ASCII letters and turns the characters that end a parameter's value ('&', '#',
# whitespace) into spaces, byte for byte (so offsets stay those of the text).
_FOLD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ&#\t\n\r\x0b\x0c", b"abcdefghijklmnopqrstuvwxyz       ")
REDACTED = "***"
SHOWN_CHARS = 200  # a value (a URI) shown in a message is cut to this many characters
MESSAGE_CHARS = 1000  # a whole message (a row error, a command's error line) is cut to this many


def redact(text: str, max_chars: int = SHOWN_CHARS) -> str:
    """`text` safe for a message or a log: the user-info of every URL replaced by '***'
    ('s3://key:se/cr@t@host/k' → 's3://***@host/k'), the value of every credential-like
    parameter too ('X-Amz-Signature=***'), cut to `max_chars` characters, saying how long it was.

    A URL starts at '://' (any scheme, or none) and runs to the next '://'; its user-info is
    everything before its last '@', whatever it holds ('/', ':', '@', '%', spaces, tabs and
    newlines, which urllib deletes from a URL). So a key with an '@' in it ('s3://b/a@b.jpg'), or
    an '@' in the text after a URL, is shown as 's3://***@b.jpg': a message may say less, never a
    credential."""
    head = redacted_head(text, max_chars)
    return f"{head}… ({len(text)} characters in all)" if len(text) > max_chars else head


def redacted_head(text: str, max_chars: int) -> str:
    """The first `max_chars` characters of `text` redacted like `redact` does, with the whole text
    in view: a user-info whose '@' lies past the cut is hidden too (cutting first would show it).
    Linear in the length of `text`: past the cut only `find` / `rfind` run over it, so the
    Python work is bounded by `max_chars`."""
    raw = text.encode("utf-8", "surrogatepass")
    stop = len(text[:max_chars].encode("utf-8", "surrogatepass")) if len(text) > max_chars else len(raw)
    # Both kinds of span are found in the original text, so hiding one cannot hide the other.
    out, done = [], 0
    for begin, end in sorted(_user_info_spans(raw, stop) + _param_spans(raw, stop)):
        if out and begin <= done:  # overlaps or touches the span before
            done = max(done, end)
            continue
        out += [raw[done:begin], REDACTED.encode()]
        done = end
    out.append(raw[done:stop])
    return b"".join(out).decode("utf-8", "surrogatepass")


def _user_info_spans(raw: bytes, stop: int) -> list[tuple[int, int]]:
    """(begin, end) of the user-info of every URL whose '://' starts before `stop`."""
    spans = []
    start = raw.find(b"://")
    while start != -1 and start < stop:
        begin = start + 3
        # Up to the next URL: a secret may hold spaces too, and hiding a later '@' of plain text
        # says less, never too much.
        end = raw.find(b"://", begin)
        end = len(raw) if end == -1 else end
        at = raw.rfind(b"@", begin, end)
        if at > begin:
            spans.append((begin, at))
        start = end if end < len(raw) else -1
    return spans


def _param_spans(raw: bytes, stop: int) -> list[tuple[int, int]]:
    """(begin, end) of the value of every credential-like parameter named before `stop`."""
    folded = raw.translate(_FOLD)
    spans: list[tuple[int, int]] = []
    done = 0
    found = [(at, name) for name in _SECRET_PARAMS if (at := folded.find(name)) != -1]
    heapq.heapify(found)
    while found:  # the names in order of position; one inside a value already found is skipped
        at, name = heapq.heappop(found)
        if at >= stop:
            break
        if at >= done:
            end = folded.find(b" ", at + len(name))
            done = len(raw) if end == -1 else end
            spans.append((at + len(name), done))
        if (at := folded.find(name, max(done, at + 1))) != -1:
            heapq.heappush(found, (at, name))
    return [(begin, end) for begin, end in spans if end > begin]


def scheme(uri: str) -> str:
    """'s3' or 'file' ('file' for plain paths); ValueError for any other scheme."""
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"expected a non-empty URI string, got {redact(repr(uri))}")
    head, sep, _ = uri.partition("://")
    if not sep:
        return "file"
    head = head.lower()
    if head in ("s3", "file"):
        return head
    raise ValueError(f"unsupported URI scheme {redact(head + '://')!r} in {redact(uri)!r}; "
                     f"supported: {', '.join(SUPPORTED_SCHEMES)}")


def is_s3(uri: str) -> bool:
    """True for `s3://` URIs."""
    return isinstance(uri, str) and uri[:5].lower() == "s3://"


def split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b` → ('bucket', 'a/b'); ValueError without a bucket."""
    if not is_s3(uri):
        raise ValueError(f"expected an s3:// URI, got {redact(uri)!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"s3 URI has no bucket: {redact(uri)!r}")
    return bucket, key


def _path(uri: str) -> str:
    """The filesystem path of a URI: 'bucket/key' for S3, an absolute path for local files."""
    kind = scheme(uri)
    if kind == "s3":
        bucket, key = split_s3(uri)
        return f"{bucket}/{key}".rstrip("/")
    if uri[:7].lower() == "file://":
        uri = uri[7:]
    return os.path.abspath(uri)


def absolute(uri: str) -> str:
    """`uri` with a plain relative path made absolute; URIs with a scheme unchanged. Jobs pass their
    locations through this on the driver: Ray workers do not share its working directory."""
    return uri if "://" in uri else os.path.abspath(uri)


def _config(storage: StorageConfig | None) -> StorageConfig:
    if storage is None:
        return StorageConfig()
    if not isinstance(storage, StorageConfig):
        raise ValueError(f"storage must be a StorageConfig or None, got {type(storage).__name__}")
    return storage


def _pyarrow_s3(storage: StorageConfig, sdk_retries: bool) -> pafs.FileSystem:
    kwargs: dict = {
        "anonymous": storage.anonymous,
        "region": storage.region,
        # Without this an endpoint_override still gets path-style requests; with an endpoint and
        # path_style=False (e.g. a virtual-host-only S3 service) it must be forced on.
        "force_virtual_addressing": not storage.use_path_style,
    }
    if storage.endpoint_url:
        # pyarrow ignores AWS_ENDPOINT_URL, and wants host[:port] and the scheme separately.
        parsed = urlparse(storage.endpoint_url)
        if not parsed.scheme or not parsed.netloc:
            raise ValueError(f"storage.endpoint_url must look like http(s)://host[:port], got "
                             f"{redact(storage.endpoint_url)!r}")
        kwargs["scheme"] = parsed.scheme
        kwargs["endpoint_override"] = parsed.netloc + parsed.path.rstrip("/")
    # `profile` is not a pyarrow option: the AWS SDK underneath reads AWS_PROFILE itself.
    # request_timeout bounds a stalled transfer (the SDK's low-speed limit on Linux). The SDK's
    # own retry loop makes `storage.retries` + 1 attempts, or one where `retrying` is the loop.
    attempts = storage.retries + 1 if sdk_retries else 1
    return pafs.S3FileSystem(**kwargs, connect_timeout=storage.connect_timeout_s,
                             request_timeout=storage.request_timeout_s,
                             retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=attempts))


def filesystem(uri: str, storage: StorageConfig | None = None, *,
               sdk_retries: bool = True) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for `uri`.

    S3: `pyarrow.fs.S3FileSystem` built from `storage` and path 'bucket/key'; its SDK retries a
    failed request up to `storage.retries` times, or never with `sdk_retries=False`: the client
    for calls wrapped in `retrying`, whose loop must be the only one. Local: the local
    filesystem and an absolute path. ValueError for unsupported schemes.
    """
    path = _path(uri)
    if not is_s3(uri):
        return _LOCAL, path
    storage = _config(storage)
    key = (os.getpid(), storage, sdk_retries)
    with _lock:
        fs = _pyarrow_cache.get(key)
        if fs is None:
            fs = _pyarrow_cache[key] = _pyarrow_s3(storage, sdk_retries)
    return fs, path


def fsspec_filesystem(uri: str, storage: StorageConfig | None = None) -> tuple["fsspec.AbstractFileSystem", str]:
    """(fsspec filesystem, path inside it) for `uri`: s3fs for S3, fsspec's local filesystem otherwise."""
    import fsspec

    path = _path(uri)
    if not is_s3(uri):
        return fsspec.filesystem("file", auto_mkdir=True), path
    storage = _config(storage)
    key = (os.getpid(), storage)
    with _lock:
        fs = _fsspec_cache.get(key)
        if fs is None:
            import s3fs

            fs = _fsspec_cache[key] = s3fs.S3FileSystem(
                anon=storage.anonymous,
                profile=storage.profile,
                client_kwargs=_botocore_client_kwargs(storage),
                config_kwargs=_botocore_config_kwargs(storage),
            )
            # s3fs wraps each call in a loop of its own (5 tries of botocore's loop): one try.
            # Not a constructor option, so a copy of this object unpickled elsewhere loses it.
            fs.retries = 1
    return fs, path


def _botocore_client_kwargs(storage: StorageConfig) -> dict:
    client_kwargs = {}
    if storage.endpoint_url:
        client_kwargs["endpoint_url"] = storage.endpoint_url
    if storage.region:
        client_kwargs["region_name"] = storage.region
    return client_kwargs


def _botocore_config_kwargs(storage: StorageConfig) -> dict:
    # botocore's retry loop is the only one: `storage.retries` + 1 attempts (its
    # standard mode retries timeouts, dropped connections, 5xx and throttling).
    config_kwargs: dict = {"connect_timeout": storage.connect_timeout_s,
                           "read_timeout": storage.request_timeout_s,
                           "retries": {"mode": "standard", "total_max_attempts": storage.retries + 1}}
    if storage.use_path_style:
        config_kwargs["s3"] = {"addressing_style": "path"}
    return config_kwargs


def s3_client(storage: StorageConfig | None = None) -> Any:
    """A botocore S3 client built from `storage` like the fsspec filesystem's (endpoint, region,
    profile, anonymous access, path style, timeouts, retries), for the calls pyarrow's S3
    filesystem cannot make: conditional writes (`If-None-Match`, `If-Match`, `attrgan.lease`).
    Cached like the filesystems (botocore clients are thread-safe)."""
    import botocore.session
    from botocore import UNSIGNED
    from botocore.config import Config

    storage = _config(storage)
    key = (os.getpid(), storage)
    with _lock:
        client = _botocore_cache.get(key)
        if client is None:
            options = _botocore_config_kwargs(storage)
            if storage.anonymous:
                options["signature_version"] = UNSIGNED
            session = botocore.session.Session(profile=storage.profile)
            client = _botocore_cache[key] = session.create_client("s3", config=Config(**options),
                                                                  **_botocore_client_kwargs(storage))
    return client


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI or path with '/': `join("s3://b/x", "y/z.parquet")` → 's3://b/x/y/z.parquet'."""
    out = uri.rstrip("/") if uri.rstrip("/") else uri
    for part in parts:
        part = str(part).strip("/")
        if part:
            out = out + part if out.endswith("/") else f"{out}/{part}"
    return out


def parent(uri: str) -> str:
    """The folder that holds `uri` (same scheme): 's3://b/x/m.parquet' → 's3://b/x'."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        head = posixpath.dirname(key.rstrip("/"))
        return f"s3://{bucket}/{head}" if head else f"s3://{bucket}"
    if uri[:7].lower() == "file://":
        return "file://" + os.path.dirname(uri[7:].rstrip("/"))
    return os.path.dirname(os.path.abspath(uri))


# Words of the S3 SDK / curl / socket errors that may pass on a retry; everything else
# (missing, denied, malformed) is permanent.
_TRANSIENT = re.compile(
    r"HTTP status (5\d\d|429)|\b(5(00|02|03|04)|429)\b|SLOW_?DOWN|THROTTL|REQUEST_?TIME_?OUT|TimedOut|"
    r"timed? ?out|SERVICE_UNAVAILABLE|ServiceUnavailable|INTERNAL_FAILURE|InternalError|NETWORK_CONNECTION|"
    r"curlCode|connection (reset|refused|aborted|closed)|broken pipe|reset by peer|temporar", re.IGNORECASE)


def is_transient(exc: BaseException) -> bool:
    """True for failures that may pass on a retry: timeouts, dropped connections, 5xx, throttling."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, ObjectRefusedError)):
        return False
    if isinstance(exc, (TimeoutError, ConnectionError, TransientStorageError)):
        return True
    return isinstance(exc, OSError) and bool(_TRANSIENT.search(str(exc)))


def _short_reason(exc: BaseException) -> str:
    text = str(exc)
    status = re.search(r"HTTP status (\d{3})", text)
    if status:
        return f"HTTP {status.group(1)}"
    match = _TRANSIENT.search(text)
    return match.group(0) if match else type(exc).__name__


def retrying(uri: str, storage: StorageConfig, call: Callable[[], T]) -> T:
    """`call()`, retried on transient failures with exponential backoff and jitter, within
    `storage.retries` and `storage.retry_max_wait_s` of waiting in all. `call` must use a client
    from `filesystem(..., sdk_retries=False)`, so that this loop is the only one."""
    waited = 0.0
    for attempt in range(storage.retries + 1):
        try:
            return call()
        except OSError as exc:
            if not is_transient(exc):
                raise
            delay = storage.retry_backoff_s * 2 ** attempt * random.uniform(0.5, 1.0)
            if attempt == storage.retries or waited + delay > storage.retry_max_wait_s:
                raise TransientStorageError(f"{redact(uri)} unreachable after {attempt + 1} attempts "
                                            f"({_short_reason(exc)})") from None
            time.sleep(delay)
            waited += delay
    raise AssertionError("unreachable")


def _read_limited(f: "pafs.NativeFile", size: int, uri: str, limit: int) -> bytes:
    if size > limit:
        raise ObjectRefusedError(f"{redact(uri)} is {size} bytes, over the {limit}-byte limit")
    chunks, total = [], 0
    while True:  # the object may have grown since its size was read: never read past the limit
        chunk = f.read(min(_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise ObjectRefusedError(f"{redact(uri)} is over the {limit}-byte limit")


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _read_local(path: str, uri: str, limit: int) -> bytes:
    real = os.path.realpath(path)
    for root in _PSEUDO_ROOTS:
        if _under(real, root):
            raise ObjectRefusedError(f"{redact(uri)} lies under {root}, which holds devices and kernel state, not images")
    # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as f:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(f"{redact(uri)} is a folder")
        if not stat.S_ISREG(info.st_mode):
            raise ObjectRefusedError(f"{redact(uri)} is a {_file_kind(info.st_mode)}, not a regular file")
        return _read_limited(f, info.st_size, uri, limit)  # type: ignore[arg-type]


def read_bytes(uri: str, storage: StorageConfig | None = None, *, max_bytes: int | None = None) -> bytes:
    """The whole object/file, at most `max_bytes` (default `storage.max_object_bytes`).

    FileNotFoundError when it does not exist; ObjectRefusedError when too large or not a regular
    file; TransientStorageError when the store kept failing through every retry.
    """
    storage = _config(storage)
    limit = storage.max_object_bytes if max_bytes is None else max_bytes
    fs, path = filesystem(uri, storage, sdk_retries=False)
    if not is_s3(uri):
        try:
            return _read_local(path, uri, limit)
        except FileNotFoundError:
            raise FileNotFoundError(f"{redact(uri)} not found") from None

    def read() -> bytes:
        with fs.open_input_file(path) as f:  # a HEAD first: the size is known before any byte is read
            return _read_limited(f, f.size(), uri, limit)

    try:
        return retrying(uri, storage, read)
    except FileNotFoundError:
        raise FileNotFoundError(f"{redact(uri)} not found") from None
    except (TransientStorageError, ObjectRefusedError):
        raise
    except OSError as exc:
        # pyarrow reports a missing S3 key as a generic OSError on some code paths.
        if is_not_found(exc):
            raise FileNotFoundError(f"{redact(uri)} not found") from None
        raise OSError(redact(str(exc))) from None
    except pa.ArrowException as exc:  # e.g. ArrowInvalid, a ValueError: its text may quote the URI unredacted
        raise OSError(f"{redact(uri)}: unreadable ({type(exc).__name__})") from None


def is_not_found(exc: OSError) -> bool:
    """True when `exc` says the object or folder does not exist (pyarrow reports a missing S3 key
    as a generic OSError on some code paths)."""
    text = str(exc)
    return "NoSuchKey" in text or "NoSuchBucket" in text or "does not exist" in text or "Path does not exist" in text


def write_bytes(uri: str, data: bytes, storage: StorageConfig | None = None) -> None:
    """Write `data` to `uri`, replacing it; local parent folders are created. Transient
    object-store failures are retried like reads (a rewrite of the whole object is idempotent)."""
    storage = _config(storage)
    fs, path = filesystem(uri, storage, sdk_retries=False)
    if not is_s3(uri):
        fs.create_dir(os.path.dirname(path), recursive=True)

    def write() -> None:
        with fs.open_output_stream(path) as f:
            f.write(data)

    retrying(uri, storage, write) if is_s3(uri) else write()


def replace_bytes(uri: str, data: bytes, storage: StorageConfig | None = None) -> None:
    """`write_bytes` for an object readers may be reading while it changes: on local disk the data
    goes to a temporary file beside it that is then renamed over it, so a reader gets the old
    file or the new one, whole, never a truncated one. An S3 put is whole already."""
    if is_s3(uri):
        write_bytes(uri, data, storage=storage)
        return
    _, path = filesystem(uri, _config(storage), sdk_retries=False)
    temporary = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        write_durably(temporary, data)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_durably(path: str, data: bytes) -> None:
    """Write `data` to the local file `path` and on to the disk (fsync), creating its folder: the
    temporary file that a rename or link then publishes whole, even across a power loss."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def exists(uri: str, storage: StorageConfig | None = None) -> bool:
    """True when `uri` is an existing file/object or folder/prefix."""
    fs, path = filesystem(uri, storage)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def list_dir(uri: str, storage: StorageConfig | None = None, *, recursive: bool = False) -> list[str]:
    """Sorted URIs of the entries under folder/prefix `uri` (files only when `recursive`).

    A missing folder lists as []. The URIs keep the scheme of `uri` ('s3://…', 'file://…' or paths).
    """
    fs, path = filesystem(uri, storage)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=recursive))
    base = uri.rstrip("/")
    out = []
    for info in infos:
        if recursive and info.type != pafs.FileType.File:
            continue
        rel = info.path[len(path):].lstrip("/")
        out.append(join(base, rel))
    return sorted(out)


def copy_folder(src: str, dst: str, storage: StorageConfig | None = None) -> None:
    """Copy the files directly under folder/prefix `src` into `dst` (a network folder of a bundle)."""
    for uri in list_dir(src, storage):
        write_bytes(join(dst, uri.rsplit("/", 1)[1]), read_bytes(uri, storage), storage)


def delete_prefix(uri: str, storage: StorageConfig | None = None) -> None:
    """Delete everything under folder/prefix `uri` (for rewriting one output partition).

    Refuses a bucket root or a filesystem root, so a bad argument cannot wipe a whole bucket.
    A missing prefix is not an error.
    """
    fs, path = filesystem(uri, storage)
    if is_s3(uri):
        _, key = split_s3(uri)
        if not key.strip("/"):
            raise ValueError(f"refusing to delete a whole bucket, got {redact(uri)!r}; name a prefix inside it")
    elif os.path.dirname(path) == path:
        raise ValueError(f"refusing to delete a filesystem root, got {redact(uri)!r}")
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return
    if info.type == pafs.FileType.File:
        raise ValueError(f"delete_prefix expects a folder/prefix, got the file {redact(uri)!r}")
    fs.delete_dir(path)


def _under(path: str, folder: str) -> bool:
    folder = folder.rstrip("/")
    return path == folder or path.startswith(folder + "/")


# What an S3 bucket name may hold, looser than AWS's own rules (any S3-compatible store's names
# fit), so that a user-info ('key:secret@bucket') or a port is never taken for one. One character
# class: matching is linear.
S3_BUCKET = re.compile(r"[A-Za-z0-9._-]{1,255}", re.ASCII)


def allowed(uri: str, prefixes: Sequence[str]) -> bool:
    """True when `uri` lies under one of `prefixes`: `s3://bucket[/prefix]` entries for objects,
    absolute local folders for local paths (compared after resolving symlinks and '..'), or the
    entry "file://", which admits every local path. A malformed URI is never allowed."""
    try:
        kind = scheme(uri)
    except ValueError:
        return False
    if kind == "s3":
        bucket, _, key = uri[5:].partition("/")
        if not bucket or ".." in key.split("/"):
            return False
        return any(is_s3(p) and _under(uri, p) for p in prefixes)
    if "file://" in prefixes:
        return True
    try:
        real = os.path.realpath(_path(uri))
    except ValueError:  # a NUL character: no such file
        return False
    return any(p.startswith("/") and _under(real, os.path.realpath(p)) for p in prefixes)
