"""Start, inspect and stop a single-machine Ray head for attrgan jobs.

    .venv/bin/python cluster/local.py start [--num-cpus 4] [--port 0] [--dashboard-port 8265]
    .venv/bin/python cluster/local.py status
    .venv/bin/python cluster/local.py stop

`start` runs `ray start --head` bound to this machine only (dashboard and Jobs API on
127.0.0.1), with token authentication explicitly disabled (`--auth disabled`, the default, for a
laptop or CI box) or on (`--auth token`, for any head other people can reach), an object store
sized from this machine's RAM, and the venv of this Python first on PATH so that
`ray job submit ... -- python jobs/<name>.py` runs with the same interpreter and packages as the
head. It then prints the address and the `ray job submit` line to use.

Every cluster lives in its own `--temp-dir` (default /tmp/attrgan-ray; keep it short: Ray's
Unix socket paths must stay under 107 bytes). `stop` ends exactly the processes of that cluster
(those naming its temp dir or GCS address, and their children) rather than running
`ray stop`, which kills every Ray process of the user, other sessions' included.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

GIB = 1024**3
# Ray refuses object stores under 75 MiB; leave headroom.
MIN_OBJECT_STORE = 80 * 1024**2
DEFAULT_TEMP_DIR = "/tmp/attrgan-ray"
STATE_FILE = "attrgan-local.json"
AUTH_MODES = ("disabled", "token")
VENV_BIN = Path(sys.executable).parent


def object_store_bytes(*, total_memory: int, shm_bytes: int | None, fraction: float = 0.25,
                       cap: int = 8 * GIB) -> int:
    """Object store size: `fraction` of RAM, at most `cap`, and at most 90 % of /dev/shm.

    The store lives in /dev/shm; if it does not fit Ray falls back to disk-backed files, which
    makes Ray Data shuffles and batch hand-offs slow. The rest of RAM is left to the workers
    (decoded images, model weights).
    """
    if not 0 < fraction <= 0.8:
        raise ValueError(f"fraction must be in (0, 0.8], got {fraction}")
    if total_memory <= 0 or cap <= 0:
        raise ValueError(f"total_memory and cap must be positive, got {total_memory} and {cap}")
    size = min(int(total_memory * fraction), cap)
    if shm_bytes:
        size = min(size, int(shm_bytes * 0.9))
    if size < MIN_OBJECT_STORE:
        raise ValueError(f"object store would be {size} bytes, under Ray's minimum {MIN_OBJECT_STORE}; "
                         f"give the machine more RAM or /dev/shm (e.g. docker --shm-size=2g)")
    return size


def machine_memory() -> tuple[int, int | None]:
    """(total RAM bytes, /dev/shm size bytes or None)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        st = os.statvfs("/dev/shm")
        shm = st.f_frsize * st.f_blocks
    except OSError:
        shm = None
    return total, shm


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_command(*, port: int, dashboard_port: int, client_port: int, agent_port: int,
                  num_cpus: int, object_store: int, temp_dir: str, num_gpus: int | None = None) -> list[str]:
    """The `ray start --head` argv. Every port is explicit so two heads on one box never collide."""
    if num_cpus < 1:
        raise ValueError(f"num_cpus must be >= 1, got {num_cpus}")
    cmd = [
        str(VENV_BIN / "ray"), "start", "--head",
        "--node-ip-address", "127.0.0.1",
        "--port", str(port),
        "--dashboard-host", "127.0.0.1",
        "--dashboard-port", str(dashboard_port),
        "--include-dashboard", "true",
        "--ray-client-server-port", str(client_port),
        "--dashboard-agent-listen-port", str(agent_port),
        "--num-cpus", str(num_cpus),
        "--object-store-memory", str(object_store),
        "--temp-dir", temp_dir,
        "--disable-usage-stats",
    ]
    if num_gpus is not None:
        cmd += ["--num-gpus", str(num_gpus)]
    return cmd


def ray_env(auth: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for `ray start` and for jobs: explicit RAY_AUTH_MODE, this venv first on PATH.

    Job entrypoints are shell commands run by a process the raylet started, so `python` in
    `-- python jobs/train.py` resolves through the PATH given here.
    """
    if auth not in AUTH_MODES:
        raise ValueError(f"auth must be one of {AUTH_MODES}, got {auth!r}")
    env = dict(os.environ if base is None else base)
    env["RAY_AUTH_MODE"] = auth
    path = env.get("PATH", "")
    if path.split(os.pathsep)[0] != str(VENV_BIN):
        env["PATH"] = os.pathsep.join([str(VENV_BIN), path]) if path else str(VENV_BIN)
    return env


def submit_hint(*, dashboard_port: int, auth: str) -> str:
    """The `ray job submit` line for this head (working dir upload without the venv)."""
    runtime_env = json.dumps({"excludes": [".venv", ".git", "**/__pycache__", "*.egg-info", ".pytest_cache"]})
    return (f"RAY_AUTH_MODE={auth} ray job submit --address http://127.0.0.1:{dashboard_port} "
            f"--working-dir . --runtime-env-json {shlex.quote(runtime_env)} -- python jobs/train.py --help")


def _state_path(temp_dir: str) -> Path:
    return Path(temp_dir) / STATE_FILE


def read_state(temp_dir: str) -> dict:
    """What `start` recorded: ports, GCS address, auth mode. FileNotFoundError when not started."""
    path = _state_path(temp_dir)
    if not path.exists():
        raise FileNotFoundError(f"no local Ray head recorded in {temp_dir} (run `cluster/local.py start` first)")
    return json.loads(path.read_text())


def start(*, num_cpus: int = 4, port: int = 6379, dashboard_port: int = 8265, temp_dir: str = DEFAULT_TEMP_DIR,
          auth: str = "disabled", object_store: int | None = None, num_gpus: int | None = None,
          timeout_s: float = 60.0) -> dict:
    """Start the head and wait until its Jobs API answers. Port 0 picks a free port.

    Returns the recorded state: {"gcs_address", "dashboard_url", "port", "dashboard_port",
    "temp_dir", "auth", "num_cpus", "object_store_bytes"}.
    """
    port = port or free_port()
    dashboard_port = dashboard_port or free_port()
    for name, p in (("port", port), ("dashboard_port", dashboard_port)):
        if port_in_use(p):
            raise ValueError(f"{name} {p} is already in use on 127.0.0.1; pass another one or 0 for a free one")
    if object_store is None:
        total, shm = machine_memory()
        object_store = object_store_bytes(total_memory=total, shm_bytes=shm)
    Path(temp_dir).mkdir(parents=True, exist_ok=True)
    cmd = start_command(port=port, dashboard_port=dashboard_port, client_port=free_port(),
                        agent_port=free_port(), num_cpus=num_cpus, object_store=object_store,
                        temp_dir=temp_dir, num_gpus=num_gpus)
    # Every worker inherits this: the state API (Ray Train's placement-group cleaner asks it) is this
    # head's dashboard, not whatever /tmp/ray/ray_current_cluster names (DESIGN.md, "Facts learned the
    # hard way"). Jobs on this head inherit it too, so their state and job clients mean this head.
    env = ray_env(auth) | {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard_port}"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ray start failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    # Ray swaps 127.0.0.1 for the host's address for GCS; it records the real one here.
    gcs_address = (Path(temp_dir) / "ray_current_cluster").read_text().strip()
    state = {
        "gcs_address": gcs_address, "port": port, "dashboard_port": dashboard_port,
        "dashboard_url": f"http://127.0.0.1:{dashboard_port}", "temp_dir": temp_dir, "auth": auth,
        "num_cpus": num_cpus, "object_store_bytes": object_store,
    }
    _state_path(temp_dir).write_text(json.dumps(state, indent=2))
    if not wait_ready(state["dashboard_url"], timeout_s=timeout_s):
        raise RuntimeError(f"Ray started but its Jobs API at {state['dashboard_url']} did not answer "
                           f"within {timeout_s:.0f} s; see {temp_dir}/session_latest/logs/dashboard.log")
    return state


def wait_ready(dashboard_url: str, *, timeout_s: float) -> bool:
    """True once GET <dashboard>/api/version answers 200 (the Jobs API is then up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{dashboard_url}/api/version", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def _process_table() -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of every process, from POSIX `ps` (Linux and macOS)."""
    # -ww: full command lines; without it ps cuts them at $COLUMNS and the temp dir goes unseen.
    out = subprocess.run(["ps", "-A", "-ww", "-o", "pid=,ppid=,args="], capture_output=True, text=True,
                         check=True).stdout
    table = []
    for line in out.splitlines():
        pid, ppid, *args = line.split(None, 2)
        table.append((int(pid), int(ppid), args[0] if args else ""))
    return table


def cluster_pids(temp_dir: str, gcs_address: str | None,
                 table: Sequence[tuple[int, int, str]] | None = None) -> list[int]:
    """Processes of this cluster: the command line names its temp dir or GCS address; plus children.

    Ray daemonises its servers, so they are found by what they were started with rather than by
    ancestry; workers, agents and job drivers are then their descendants.
    """
    table = _process_table() if table is None else table
    pattern = re.escape(temp_dir.rstrip("/") + "/")
    if gcs_address:  # `--address=10.0.0.5:6379` but not `...:63790`
        pattern += "|=" + re.escape(gcs_address) + r"(?!\d)"
    marks = re.compile(pattern)
    me = os.getpid()
    found = {pid for pid, _, args in table if pid != me and marks.search(args)}
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in table:
        children.setdefault(ppid, []).append(pid)
    pending = list(found)
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found and child != me:
                found.add(child)
                pending.append(child)
    return sorted(found)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0): reap it if it is ours.
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def _signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop(*, temp_dir: str = DEFAULT_TEMP_DIR, grace_s: float = 10.0) -> int:
    """Terminate this cluster's processes (SIGTERM, then SIGKILL after `grace_s`). Returns how many."""
    try:
        gcs_address = read_state(temp_dir).get("gcs_address")
    except FileNotFoundError:  # started by hand with this --temp-dir: Ray's own record
        current = Path(temp_dir) / "ray_current_cluster"
        gcs_address = current.read_text().strip() if current.exists() else None
    pids = cluster_pids(temp_dir, gcs_address)
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    _signal_all([p for p in pids if _alive(p)], signal.SIGKILL)
    _state_path(temp_dir).unlink(missing_ok=True)
    return len(pids)


def status(*, temp_dir: str = DEFAULT_TEMP_DIR) -> dict:
    """The recorded state plus "running" (Jobs API answers) and "ray_status" (`ray status` text)."""
    state = read_state(temp_dir)
    state["running"] = wait_ready(state["dashboard_url"], timeout_s=2)
    proc = subprocess.run([str(VENV_BIN / "ray"), "status", "--address", state["gcs_address"]],
                          env=ray_env(state["auth"]), capture_output=True, text=True, timeout=60)
    state["ray_status"] = proc.stdout if proc.returncode == 0 else proc.stderr
    return state


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cluster/local.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start a local Ray head")
    p_start.add_argument("--num-cpus", type=int, default=4,
                         help="logical CPUs (default 4, so Ray Data read tasks fit beside actors)")
    p_start.add_argument("--num-gpus", type=int, default=None, help="default: autodetect")
    p_start.add_argument("--port", type=int, default=6379, help="GCS port; 0 = any free port")
    p_start.add_argument("--dashboard-port", type=int, default=8265, help="dashboard / Jobs API port; 0 = any free port")
    p_start.add_argument("--object-store-gb", type=float, default=None,
                         help="object store size (default 25%% of RAM, at most 8 GiB and 90%% of /dev/shm)")
    p_start.add_argument("--auth", choices=AUTH_MODES, default="disabled",
                         help="RAY_AUTH_MODE of the head; use token on any head others can reach")
    for p in (p_start, sub.add_parser("status", help="show the running head"),
              sub.add_parser("stop", help="stop the head started with the same --temp-dir")):
        p.add_argument("--temp-dir", default=os.environ.get("ATTRGAN_RAY_TEMP_DIR", DEFAULT_TEMP_DIR))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "start":
        object_store = None if args.object_store_gb is None else int(args.object_store_gb * GIB)
        state = start(num_cpus=args.num_cpus, port=args.port, dashboard_port=args.dashboard_port,
                      temp_dir=args.temp_dir, auth=args.auth, object_store=object_store, num_gpus=args.num_gpus)
        print(f"Ray head running: GCS {state['gcs_address']}, dashboard {state['dashboard_url']}, "
              f"{state['num_cpus']} CPUs, object store {state['object_store_bytes'] / GIB:.2f} GiB, "
              f"RAY_AUTH_MODE={state['auth']}")
        print(f"export RAY_ADDRESS={state['dashboard_url']}")
        if state["auth"] == "token":
            print("Clients need the token: copy ~/.ray/auth_token (or set RAY_AUTH_TOKEN) and RAY_AUTH_MODE=token.")
        print(submit_hint(dashboard_port=state["dashboard_port"], auth=state["auth"]))
        print(f"stop with: {sys.executable} cluster/local.py stop --temp-dir {state['temp_dir']}")
    elif args.command == "status":
        state = status(temp_dir=args.temp_dir)
        print(json.dumps({k: v for k, v in state.items() if k != "ray_status"}, indent=2))
        print(state["ray_status"])
        return 0 if state["running"] else 1
    else:
        n = stop(temp_dir=args.temp_dir)
        print(f"stopped {n} process(es) of the Ray head in {args.temp_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
