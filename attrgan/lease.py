"""One writer per output base: the extraction's lease object `<out>/_lease.json`.

A run takes the lease before it writes anything under `out` and gives it back when it ends. The
object holds {run_id, host, pid, started_at, heartbeat_at, ttl_s} as JSON (readers of the results
skip '_' paths). Every change to it is conditional, so two runs can never both believe they hold it:

- take: a create that fails when the object exists (S3: PutObject with `If-None-Match: *`; local
  disk: the bytes go to a temporary file, then `os.link` names it, which fails when the name
  exists: as exclusive as O_CREAT|O_EXCL, and no reader ever sees an empty lease);
- renew (a heartbeat thread, every ttl_s / 3): S3: PutObject with `If-Match` on the ETag this
  run last wrote; local: check the file still holds what this run wrote, then replace it
  atomically. A renewal that finds another run's lease (or none) marks the lease lost;
- take over a lease whose heartbeat is older than its ttl_s (a crashed holder): S3: PutObject with
  `If-Match` on the stale ETag; local: under a lock file created with O_CREAT|O_EXCL, replace the
  file only if it still holds the stale bytes judged. Of two takers one wins, the other is refused;
- give back at the end of the run, only if still ours (S3: DeleteObject with `If-Match`);
- break (`--break-lease`, for operators who know the holder is dead): delete whatever is there,
  logging who held it.

Staleness compares the holder's heartbeat_at with this host's clock: hosts' clocks must agree to
well within the TTL (NTP does). The default TTL of 300 s lets a crashed run's output be taken over
five minutes after its last heartbeat, while a holder survives a heartbeat or two lost to a slow
or unreachable store (each renewal is bounded by the storage timeouts and retries).

Torch-free and Ray-free: the driver uses it before Ray starts; pyarrow's S3 filesystem cannot make
conditional writes, so S3 calls go through a botocore client built from the `StorageConfig`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from attrgan.config import SetupError, StorageConfig
from attrgan.data.storage import filesystem, is_s3, join, redact, s3_client, split_s3, write_durably

log = logging.getLogger(__name__)

LEASE_NAME = "_lease.json"
DEFAULT_TTL_S = 300.0
MAX_LEASE_BYTES = 64 << 10  # a lease is ~200 bytes; anything larger is not one of ours
TAKEOVER_WAIT_S = 2.0  # how long a local taker waits for another taker's lock (held for a read and a rename)


class LeaseHeld(SetupError):
    """Another run holds the output's lease; nothing was written."""


class _Conflict(Exception):
    """A conditional write or delete found the object not as expected."""


@dataclasses.dataclass(frozen=True)
class LeaseInfo:
    """The content of a lease object."""

    run_id: str
    host: str
    pid: int
    started_at: str
    heartbeat_at: str
    ttl_s: float

    @classmethod
    def parse(cls, data: bytes) -> "LeaseInfo | None":
        """The lease in `data`; None when it is not a lease this module wrote."""
        try:
            raw = json.loads(data)
            info = cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls)})
            dt.datetime.fromisoformat(info.heartbeat_at)
            float(info.ttl_s)
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            return None
        return info

    def to_bytes(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=2).encode()

    def stale(self, now: dt.datetime) -> bool:
        """True when its last heartbeat is older than its TTL: the holder is taken for dead."""
        heartbeat = dt.datetime.fromisoformat(self.heartbeat_at)
        if heartbeat.tzinfo is None:
            heartbeat = heartbeat.replace(tzinfo=dt.timezone.utc)
        return (now - heartbeat).total_seconds() > float(self.ttl_s)

    def describe(self) -> str:
        return (f"run {redact(str(self.run_id), 80)} on host {redact(str(self.host), 80)} "
                f"(pid {redact(str(self.pid), 20)}), started {redact(str(self.started_at), 40)}, "
                f"last heartbeat {redact(str(self.heartbeat_at), 40)}")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# ---------------------------------------------------------------------------------------------
# where the lease lives: the same five operations on S3 and on a local disk. A token says which
# version of the object a caller saw: the ETag on S3, the bytes themselves locally.


class _S3Store:
    def __init__(self, uri: str, storage: StorageConfig) -> None:
        self.uri = uri
        self.bucket, self.key = split_s3(uri)
        self.client = s3_client(storage)

    def _call(self, operation: str, **kwargs: Any) -> Any:
        """A client call; refusals of a condition raise _Conflict, other failures OSError
        (redacted: the store's message may quote the URI)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(Bucket=self.bucket, Key=self.key, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                raise _Conflict(code) from None
            if code in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"{redact(self.uri)} not found") from None
            raise OSError(f"{redact(self.uri)}: {redact(code, 60)} (HTTP {status})") from None
        except BotoCoreError as exc:  # unreachable endpoint, timeouts after every retry
            raise OSError(f"{redact(self.uri)}: {type(exc).__name__}") from None

    def read(self) -> tuple[bytes, str] | None:
        try:
            response = self._call("get_object")
        except FileNotFoundError:
            return None
        with response["Body"] as body:
            data = body.read(MAX_LEASE_BYTES + 1)
        return data, response["ETag"]

    def _put(self, data: bytes, **condition: str) -> str:
        try:
            return self._call("put_object", Body=data, **condition)["ETag"]
        except (_Conflict, FileNotFoundError):
            # A retried request whose first attempt landed is refused by its own write: ours.
            current = self.read()
            if current is not None and current[0] == data:
                return current[1]
            raise _Conflict() from None

    def create(self, data: bytes) -> str:
        return self._put(data, IfNoneMatch="*")

    def replace(self, data: bytes, token: str) -> str:
        return self._put(data, IfMatch=token)

    take_over = replace

    def delete(self, token: str) -> None:
        current = self.read()  # a store that ignores If-Match on DELETE still gets this check
        if current is None:
            return
        if current[1] != token:
            raise _Conflict()
        try:
            self._call("delete_object", IfMatch=token)
        except FileNotFoundError:
            pass

    def remove(self) -> None:
        self._call("delete_object")


class _LocalStore:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.path = filesystem(uri)[1]
        self.lock = f"{self.path}.takeover"

    def read(self) -> tuple[bytes, bytes] | None:
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_LEASE_BYTES + 1)
        except FileNotFoundError:
            return None
        return data, data

    def _temporary(self, data: bytes) -> str:
        temporary = f"{self.path}.{uuid.uuid4().hex}.tmp"
        write_durably(temporary, data)
        return temporary

    def create(self, data: bytes) -> bytes:
        temporary = self._temporary(data)
        try:
            os.link(temporary, self.path)  # fails when the name exists: the exclusive create
        except FileExistsError:
            raise _Conflict() from None
        finally:
            os.unlink(temporary)
        return data

    def replace(self, data: bytes, token: bytes) -> bytes:
        # Check, then replace: a run that takes the lease over between the two loses it to this
        # write (its own renewal then finds it lost). It can only do so when this holder's heartbeat
        # is already a TTL old, so the window needs a holder stalled for a whole TTL.
        current = self.read()
        if current is None or current[1] != token:
            raise _Conflict()
        os.replace(self._temporary(data), self.path)
        return data

    def take_over(self, data: bytes, token: bytes) -> bytes:
        # One taker at a time, under a lock file created exclusively; under it the lease is replaced
        # only if it still holds the stale bytes that were judged. (Renaming the stale file aside
        # first is not enough: a slower taker's rename can move the winner's fresh lease away.)
        # The lock is held for a read and a rename; a taker killed inside leaves it behind, and
        # --break-lease removes it.
        deadline = time.monotonic() + TAKEOVER_WAIT_S
        while True:
            try:
                os.close(os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                break
            except FileExistsError:
                if time.monotonic() > deadline:
                    raise _Conflict() from None
                time.sleep(0.01)
        try:
            current = self.read()
            if current is None or current[1] != token:
                raise _Conflict()
            os.replace(self._temporary(data), self.path)
            return data
        finally:
            os.unlink(self.lock)

    def delete(self, token: bytes) -> None:
        # Check, then delete: the same window as `replace`.
        current = self.read()
        if current is None:
            return
        if current[1] != token:
            raise _Conflict()
        os.unlink(self.path)

    def remove(self) -> None:
        for path in (self.path, self.lock):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


# ---------------------------------------------------------------------------------------------


class Lease:
    """The lease on output base `out` for run `run_id`. `acquire` takes it (LeaseHeld when another
    live run holds it) and starts the heartbeat; `lost` says whether it is still ours; `release`
    stops the heartbeat and gives it back. A context manager: `with Lease(...).acquire() as lease:`.
    """

    def __init__(self, out: str, storage: StorageConfig | None = None, *, run_id: str,
                 ttl_s: float = DEFAULT_TTL_S) -> None:
        if not ttl_s > 0:
            raise ValueError(f"lease ttl_s must be > 0, got {ttl_s!r}")
        self.out, self.uri = out, join(out, LEASE_NAME)
        self.run_id, self.ttl_s = run_id, float(ttl_s)
        storage = storage if storage is not None else StorageConfig()
        self._store: _S3Store | _LocalStore = _S3Store(self.uri, storage) if is_s3(out) else _LocalStore(self.uri)
        self._started_at = _now().isoformat()
        self._lock = threading.Lock()
        self._token: Any = None
        self._renewed = 0.0  # time.monotonic() of the last write that is known to have landed
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _payload(self) -> bytes:
        return LeaseInfo(run_id=self.run_id, host=socket.gethostname(), pid=os.getpid(),
                         started_at=self._started_at, heartbeat_at=_now().isoformat(), ttl_s=self.ttl_s).to_bytes()

    def _refused(self, holder: LeaseInfo | None) -> LeaseHeld:
        who = holder.describe() if holder else "an unreadable lease object"
        ttl = float(holder.ttl_s) if holder else self.ttl_s
        return LeaseHeld(f"the output {redact(self.out)} is leased to {who} ({LEASE_NAME}); one run writes an "
                         "output at a time. "
                         f"Wait for it to end (a dead holder's lease is taken over {ttl:g} s after its last "
                         "heartbeat), or rerun with --break-lease when sure that it is dead")

    def acquire(self, *, break_lease: bool = False, heartbeat: bool = True) -> "Lease":
        """Take the lease (taking over a stale one); LeaseHeld when a live run holds it, OSError when
        the store cannot be reached. `break_lease` first removes whatever lease is there.
        `heartbeat=False` takes it without renewing it (for tests of a crashed holder)."""
        if break_lease:
            self.break_()
        holder: LeaseInfo | None = None
        for _ in range(3):  # a lease released or taken over between our calls: look again
            data = self._payload()
            try:
                self._token = self._store.create(data)
                break
            except _Conflict:
                pass
            current = self._store.read()
            if current is None:
                continue
            holder = LeaseInfo.parse(current[0])
            if holder is None or not holder.stale(_now()):
                raise self._refused(holder)
            try:
                self._token = self._store.take_over(data, current[1])
                log.warning("lease %s: took over from %s (no heartbeat for over %g s)", redact(self.uri),
                            holder.describe(), float(holder.ttl_s))
                break
            except _Conflict:
                continue
        else:
            raise self._refused(holder)
        self._renewed = time.monotonic()
        if heartbeat:
            self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
            self._thread.start()
        return self

    def break_(self) -> LeaseInfo | None:
        """Remove the lease whoever holds it (an operator's `--break-lease`); returns who held it."""
        current = self._store.read()
        if current is None:
            log.warning("lease %s: --break-lease given, but no lease was held", redact(self.uri))
            return None
        holder = LeaseInfo.parse(current[0])
        self._store.remove()
        log.warning("lease %s: broken; it was held by %s", redact(self.uri),
                    holder.describe() if holder else "an unreadable lease object")
        return holder

    def renew(self) -> bool:
        """Write a new heartbeat if the lease is still ours; False (and the lease lost) when not.
        A store that cannot be reached leaves it as it was, for the next try."""
        with self._lock:
            if self._lost:
                return False
            try:
                self._token = self._store.replace(self._payload(), self._token)
                self._renewed = time.monotonic()
                return True
            except _Conflict:
                self._mark_lost()
                return False
            except OSError as exc:
                log.warning("lease %s: heartbeat failed (%s); trying again in %g s", redact(self.uri),
                            redact(str(exc)), self.ttl_s / 3)
                return True

    def _mark_lost(self) -> None:
        try:
            current = self._store.read()
        except OSError:
            current = None
        holder = LeaseInfo.parse(current[0]) if current else None
        now = f"is now held by {holder.describe()}" if holder else "was removed (--break-lease?)"
        self._lost = f"the output lease {redact(self.uri)} of run {self.run_id} {now}"
        log.error("%s", self._lost)

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            if not self.renew():
                return

    def lost(self) -> str | None:
        """None while the lease is ours; else what happened (naming the run that holds it now).
        Reads the object, so a takeover since the last heartbeat is seen too; when the store cannot
        be read, the lease counts as ours only while its last heartbeat is well within the TTL."""
        with self._lock:
            if self._lost:
                return self._lost
            try:
                current = self._store.read()
            except OSError as exc:
                if time.monotonic() - self._renewed < self.ttl_s / 2:
                    return None  # nobody may take it over before a whole TTL has passed
                return f"cannot confirm the output lease {redact(self.uri)} ({redact(str(exc))})"
            if current is None or current[1] != self._token:
                self._mark_lost()
            return self._lost

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still ours. Never raises: it runs as a
        run ends, and a lease left behind is taken over once its TTL has passed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self._lost or self._token is None:
                return
            try:
                self._store.delete(self._token)
            except _Conflict:
                log.warning("lease %s: not released, another run holds it now", redact(self.uri))
            except OSError as exc:
                log.warning("lease %s: not released (%s); it expires %g s after its last heartbeat",
                            redact(self.uri), redact(str(exc)), self.ttl_s)
            self._token = None

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __getstate__(self) -> dict[str, Any]:
        # The results sink is pickled into every write task; only the driver's object holds the
        # lease (its thread, lock and client stay there). A copy knows the lease it names, no more.
        return {"out": self.out, "uri": self.uri, "run_id": self.run_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
