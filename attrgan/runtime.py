"""Where a process gets its Ray: the one place that calls `ray.init` for jobs and library calls."""

from __future__ import annotations

import os
from typing import Any


def init_ray(**local: Any) -> None:
    """Join the cluster named by RAY_ADDRESS (or the submitting job's), else start a local Ray
    with the `local` keyword arguments (num_cpus, ...). Does nothing when Ray is already up.

    A local start passes `address="local"`: a bare `ray.init()` would try to join whatever Ray
    this machine ran last (/tmp/ray/ray_current_cluster), and hang when that one was killed.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local runs: no token auth (on by default in 2.60)
    if os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_JOB_ID"):
        ray.init()  # never num_cpus here: the cluster decides
        return
    local.setdefault("include_dashboard", False)
    local.setdefault("runtime_env", {"env_vars": {"RAY_AUTH_MODE": "disabled"}})
    ray.init(address="local", **local)
