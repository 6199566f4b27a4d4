"""How the demo lays training out on a small machine, measured side by side (attrgan.devtools.demo.TRAIN_WORKERS):
one Ray Train worker with every core's thread against single-threaded workers that split the same
global batch (DDP), for the classifier and the super-resolution GAN at the cpu-small preset.

Each figure is the last epoch's images/s over all workers of a real `train_network` run (data
loading and Ray start-up excluded); the two layouts alternate twice, so a slow stretch of the
machine hits both.
"""

from __future__ import annotations

import os
import tempfile

from attrgan.devtools.bench.train import last_images_per_s
from attrgan.train.train_config import load_train_config

GLOBAL_BATCH = 32


def run(quick: bool = False) -> None:
    import ray

    from attrgan.data.synth import generate
    from attrgan.ray_setup import start_local_ray
    from attrgan.train.ray_train import train_network

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    crops, steps = (96, 2) if quick else (1400, 20)
    started_ray = not ray.is_initialized()
    if started_ray:
        start_local_ray(log_to_driver=False)
    threads = max(1, int(ray.cluster_resources().get("CPU", 1)))
    try:
        with tempfile.TemporaryDirectory() as root:
            manifest = generate(os.path.join(root, "synth"), crops, seed=0, splits=(0.9, 0.1, 0.0))
            print(f"{threads} threads, global batch {GLOBAL_BATCH}, {steps} steps an epoch, 2 epochs")
            print(f"{'network':<12} {'layout':<28} {'images/s':>9}")
            for model in ("classifier", "superres"):
                rates: dict[int, list[float]] = {1: [], threads: []}
                for repeat in range(2):
                    for workers in rates:
                        config = load_train_config(model, overrides={
                            "epochs": 2, "workers": workers, "max_steps_per_epoch": steps,
                            "cpus_per_worker": float(threads // workers), "batch_size": GLOBAL_BATCH // workers})
                        result = train_network(config, manifest=manifest, run_name=f"{model}-{repeat}-{workers}",
                                               bundle=os.path.join(root, f"bundle-{repeat}-{workers}"))
                        rates[workers].append(last_images_per_s(result))
                for workers, values in rates.items():
                    layout = (f"1 worker x {threads} threads" if workers == 1
                              else f"{workers} workers x 1 thread")
                    print(f"{model:<12} {layout:<28} {' / '.join(f'{v:.1f}' for v in values):>9}", flush=True)
                ratio = sum(rates[threads]) / max(sum(rates[1]), 1e-9)
                print(f"{model:<12} {'single-threaded workers':<28} {ratio:.2f}x", flush=True)
    finally:
        if started_ray:
            ray.shutdown()
