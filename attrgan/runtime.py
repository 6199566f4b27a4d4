"""Where a process gets its Ray: the one place that calls `ray.init` for jobs and library calls."""

from __future__ import annotations

import os
import socket
from typing import Any


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


def start_local_ray(*, env: dict[str, str] | None = None, **options: Any) -> None:
    """Start a fresh Ray on this machine; `env` is set in every worker, `options` go to `ray.init`.

    `address="local"`: a bare `ray.init()` would join whatever Ray this machine ran last
    (/tmp/ray/ray_current_cluster) and hang when that one was killed.

    The dashboard runs on 127.0.0.1, and every worker is told its address: Ray Train's
    placement-group cleaner asks the state API (served by the dashboard) whether the controller
    lives. Without one, or pointed at that stale last cluster, each query hangs to its timeout
    and every training run ends 12 s late (DESIGN.md, "Ray facts").
    """
    import ray

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RAY_AUTH_MODE": "disabled", "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"} | (env or {})
    ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
             runtime_env={"env_vars": env}, **options)
