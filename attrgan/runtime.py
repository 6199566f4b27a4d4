"""Where a process gets its Ray: the one place that calls `ray.init` for commands, jobs and library
calls. The commands' library functions (`run_extract`, `evaluate`, `train_network`) call `init_ray`
once their checks pass: they join the Ray that is up (a command's, a job's, a notebook's) and start
a local one only when none is, so a failed check never waits for a Ray to start."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

log = logging.getLogger(__name__)
STATE_API_ENV = "RAY_API_SERVER_ADDRESS"


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
