"""Where a process gets its Ray: the one place that calls `ray.init` for commands, jobs and library
calls. The commands' library functions (`run_extract`, `evaluate`, `train_network`) call `init_ray`
once their checks pass: they join the Ray that is up (a command's, a job's, a notebook's) and start
a local one only when none is, so a failed check never waits for a Ray to start."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)
STATE_API_ENV = "RAY_API_SERVER_ADDRESS"
# The one line `quiet_actor_args_notice` drops (DESIGN.md, "Facts learned the hard way").
ACTOR_ARGS_NOTICE = b"has constructor arguments in the object store and max_restarts > 0"
_notice_dropped = False  # Ray prints it once per process


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_ray(**local: Any) -> None:
    """Join the cluster named by RAY_ADDRESS (or the submitting job's), else start a local Ray
    with the `local` keyword arguments (num_cpus, ...). Does nothing when Ray is already up.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local runs: no token auth (on by default in 2.60)
    if os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_JOB_ID"):
        ray.init()  # never num_cpus here: the cluster decides
        return
    start_local_ray(**local)


def start_quiet_ray(num_cpus: int) -> None:
    """A local Ray for the demo and `make reproduce`, which print their own progress: no worker
    logs or progress bars on this terminal; this process's S3 credentials reach the workers (the
    local S3 server's). Does nothing when Ray is already up."""
    import ray
    import ray.data

    if ray.is_initialized():
        return
    env = {k: os.environ[k] for k in ("RAY_AUTH_MODE", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "AWS_ACCESS_KEY_ID",
                                      "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION") if k in os.environ}
    start_local_ray(num_cpus=num_cpus, log_to_driver=False, env=env)
    ray.data.DataContext.get_current().enable_progress_bars = False


def start_local_ray(*, env: dict[str, str] | None = None, **options: Any) -> None:
    """Start a fresh Ray on this machine: `env` is set in this driver's workers, `options` go to
    `ray.init` (num_cpus, log_to_driver, ...; not runtime_env or the dashboard's settings).

    `address="local"`: a bare `ray.init()` would join whatever Ray this machine ran last
    (/tmp/ray/ray_current_cluster) and hang when that one was stopped.

    The dashboard runs on 127.0.0.1, and the Ray processes started here (hence every worker, of any
    job that joins later too) get its address in RAY_API_SERVER_ADDRESS: Ray Train's placement-group
    cleaner asks the state API, which the dashboard serves, whether the controller lives. Without
    one, or pointed at a Ray since stopped, each query hangs to its timeout and every training run
    ends 12 s late (DESIGN.md, "Facts learned the hard way"). This process's own environment is
    restored afterwards: the variable outranks an explicit `--address` in Ray's job and state
    clients, and commands started from here may mean another Ray.
    """
    import ray

    runtime_env = {"env_vars": {"RAY_AUTH_MODE": "disabled"} | (env or {})}
    port = free_port()
    before = os.environ.get(STATE_API_ENV)
    os.environ[STATE_API_ENV] = f"http://127.0.0.1:{port}"  # inherited by the raylet, hence the workers
    try:
        ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                 runtime_env=runtime_env, **options)
    except Exception as error:  # e.g. the port taken meanwhile, or a dashboard slow to start
        log.warning("Ray did not start with its dashboard (%s); starting it without one: training runs "
                    "will each end ~12 s late", error)
        ray.shutdown()
        os.environ.pop(STATE_API_ENV)
        ray.init(address="local", include_dashboard=False, runtime_env=runtime_env, **options)
    finally:
        if before is None:
            os.environ.pop(STATE_API_ENV, None)
        else:
            os.environ[STATE_API_ENV] = before


@contextlib.contextmanager
def quiet_actor_args_notice() -> Iterator[None]:
    """While Ray Data starts actor pools, drop Ray's core-worker line that an actor "has constructor
    arguments in the object store and max_restarts > 0"; everything else written to stderr passes.

    Ray Data itself passes every pool actor its DataContext and UDF as `ray.put` references and
    gives it max_restarts (the extraction needs restarts to survive a lost node), so Ray's C++ core
    worker logs that line at error level once per driver process. The references are the driver's,
    held for the whole run on the driver's node, so a restart does not lose them (the node-loss drill
    in tests/test_extract_faults.py restarts an actor on another node). The line comes from C++
    straight to file descriptor 2, past Python's logging: fd 2 goes through a pipe meanwhile, and a
    thread passes on everything else as it arrives. After the line was dropped once, this does nothing.
    """
    global _notice_dropped
    if _notice_dropped:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)

    def forward(data: bytes) -> None:
        try:
            os.write(saved, data)
        except OSError:  # stderr went away: keep draining, never block the writers
            pass

    def pump() -> None:
        global _notice_dropped
        held = b""
        while chunk := os.read(read, 65536):
            lines = (held + chunk).split(b"\n")
            held = lines.pop()
            for line in lines:
                if ACTOR_ARGS_NOTICE in line and b"core_worker" in line:
                    _notice_dropped = True
                else:
                    forward(line + b"\n")
            if not held.startswith(b"["):  # only Ray's C++ lines start with "[": the rest passes at once
                forward(held)
                held = b""
        forward(held)
        os.close(read)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump drains it and stops
        thread.join(timeout=10)
        if not thread.is_alive():  # else a child process holds the pipe: the pump still needs `saved`
            os.close(saved)
