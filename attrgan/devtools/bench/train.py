"""Training throughput (images/s) of each network at the cpu-small preset, with 1 and 2 Ray Train workers,
and of the reconstruction GAN trained against the classifier (agreement loss, as in the demo).

Each measurement is a real `train_network` run on a freshly rendered synthetic manifest; the figure
is the last epoch's images/s over all workers (data loading included, Ray start-up excluded).
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from typing import Any

import pandas as pd

from attrgan.data import storage as st
from attrgan.contracts import NETWORKS
from attrgan.train.train_config import load_train_config


def last_images_per_s(result: Any) -> float:
    """The last epoch's images/s over all workers of a `train_network` result (its epochs.csv)."""
    epochs = pd.read_csv(io.BytesIO(st.read_bytes(st.join(result.run_uri, "epochs.csv"))))
    return float(epochs["images_per_s"].iloc[-1])


def run(quick: bool = False) -> None:
    import ray

    from attrgan.data.synth import generate
    from attrgan.ray_setup import start_local_ray
    from attrgan.train.ray_train import train_network

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    crops, epochs, steps = (96, 1, 4) if quick else (400, 2, 20)
    started_ray = not ray.is_initialized()
    if started_ray:
        start_local_ray(log_to_driver=False)
    cpus = ray.cluster_resources().get("CPU", 1)
    try:
        with tempfile.TemporaryDirectory() as root:
            manifest = generate(os.path.join(root, "synth"), crops, seed=0, splits=(0.8, 0.2, 0.0))
            print(f"{'network':<22} {'workers':>7} {'images/s':>10} {'wall s':>8}")
            # The classifier comes first: the agreement run reads it from the same bundle.
            runs = [(model, model, {}) for model in NETWORKS]
            runs.append(("reconstruction", "reconstruction+agree", {"agreement_weight": 100.0}))
            for model, label, extra in runs:
                for workers in (1, 2):
                    # Half the cluster's CPUs per worker at most, so two workers always fit.
                    config = load_train_config(model, overrides={
                        "epochs": epochs, "workers": workers, "max_steps_per_epoch": steps,
                        "cpus_per_worker": min(1.0, cpus / 2)} | extra)
                    start = time.perf_counter()
                    result = train_network(config, manifest=manifest, bundle=os.path.join(root, f"b{workers}"),
                                           run_name=f"{label}-{workers}")
                    wall = time.perf_counter() - start
                    print(f"{label:<22} {workers:>7} {last_images_per_s(result):>10.1f} {wall:>8.1f}",
                          flush=True)
    finally:
        if started_ray:
            ray.shutdown()
