"""Extraction throughput and memory, measured side by side on the same synthetic crops.

    python -m attrgan.devtools.bench --only extract [--quick]

On one set of JPEG crops (three in four ~70×180 (W×H), one in four low-resolution ~18×44, which
the pipeline super-resolves), in one run:

- end to end: manifest (8 hive partitions) → decode → pipeline → Parquet through `run_extract`
  on a local Ray, over the crops and over them listed LONG_RUN times (a night's run, start-up paid
  once), each reported over the whole run (actor start-up and bundle load included), the long
  one also in steady state with its start-up apart (`steady_state`);
- bare models: `Pipeline` on pre-decoded arrays in this process (the ceiling for the models),
  with 1 torch thread and with all of them (the better one is the reference);
- naive loop: PIL decode + resize one crop at a time, then `Pipeline` per batch, sequentially;
- clean crops: the restore-and-classify pipeline vs the classifier alone on crops that need no
  restoration (what the conditional GANs cost when nothing is corrupted), in process;
- peak RSS of a whole `run_extract` run (driver + Ray processes) at 1× and 4× a manifest size.

Networks: the paper's sizes when CUDA is available, otherwise the `cpu-small` preset's sizes
(attrgan.train.train_config: "small" classifier trunk ×0.125 at 320×128, G^R ×0.125, G^S ×0.0625), as
in the demo. The figures compare the rows of one run, not machines.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from attrgan.attributes import RAP_ATTRIBUTES
from attrgan.bundle import Bundle, load_bundle, save_bundle
from attrgan.data.images import decode_image, resize
from attrgan.data.manifest import write_manifest
from attrgan.models import (AttributeClassifier, ClassifierConfig, ReconstructionConfig, ReconstructionGenerator,
                            SuperResConfig, SuperResGenerator)
from attrgan.pipeline import Pipeline, PipelineConfig

# (H, W). Full-size crops stay above the default SR rule (height <= half the classifier input),
# low-resolution ones are 4x smaller.
FULL_SIZE = (180, 70)
LOW_SIZE = (44, 18)
PARTITIONS = 8
BATCH = 64
LONG_RUN = 12  # the long end-to-end run lists the crops this many times


def make_bundle(*, paper: bool) -> Bundle:
    """Random networks at the paper's sizes (GPU) or the cpu-small preset's (CPU). occlusion_down's
    bias is pushed down so clean crops are not flagged, as with a trained model."""
    torch.manual_seed(0)
    if paper:
        classifier = AttributeClassifier(ClassifierConfig(attributes=RAP_ATTRIBUTES))
        widths = (1.0, 1.0)
    else:
        classifier = AttributeClassifier(ClassifierConfig(attributes=RAP_ATTRIBUTES, backbone="small", width=0.125,
                                                          input_size=(320, 128)))
        widths = (0.125, 0.0625)
    with torch.no_grad():
        classifier.body_head.bias[RAP_ATTRIBUTES.index("occlusion_down")] = -20.0
    return Bundle(classifier=classifier.eval(),
                  reconstruction=ReconstructionGenerator(ReconstructionConfig(width=widths[0])).eval(),
                  superres=SuperResGenerator(SuperResConfig(width=widths[1])).eval())


def _jpeg(rng: np.random.Generator, size: tuple[int, int]) -> bytes:
    h, w = size
    # A smooth gradient with noise: compresses like a photo, unlike pure noise.
    base = np.linspace(0, 1, h)[:, None, None] * rng.uniform(40, 200, size=3) + rng.uniform(0, 50, size=3)
    pixels = np.clip(base + rng.normal(0, 12, size=(h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_manifest(root: Path, n: int, *, low_fraction: float = 0.25, copies: int = 1, seed: int = 0) -> str:
    """`n` distinct crops under root/images; a manifest of PARTITIONS hive partitions (part=0..)
    listing them `copies` times (new crop_ids)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    uris = []
    for i in range(n):
        path = root / "images" / f"{i:06d}.jpg"
        if not path.exists():
            low = rng.random() < low_fraction
            jitter = rng.integers(-4, 5)
            size = (LOW_SIZE[0] + jitter // 2, LOW_SIZE[1]) if low else (FULL_SIZE[0] + jitter, FULL_SIZE[1])
            path.write_bytes(_jpeg(rng, size))
        uris.append(str(path))
    rows = n * copies
    frame = pd.DataFrame({"crop_id": [f"{c}-{i}" for c in range(copies) for i in range(n)],
                          "image_uri": uris * copies,
                          "part": [str(k * PARTITIONS // rows) for k in range(rows)]})
    uri = str(root / f"manifest-x{copies}")
    write_manifest(frame, uri, partition_cols=["part"])
    return uri


def _rate(fn, n: int, repeats: int = 1) -> float:
    """Crops/s of `fn` over `n` crops, best of `repeats` runs (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def _batches(n: int, size: int):
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _threads(n: int):
    """Context: torch intra-op threads set to `n`, restored afterwards."""
    @contextlib.contextmanager
    def scope():
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)
    return scope()


def run(quick: bool = False, *, extract_settings: dict | None = None) -> None:
    """Print the section's table. `extract_settings`: ExtractConfig fields for the end-to-end runs
    (default `E2E_SETTINGS`)."""
    paper = torch.cuda.is_available()
    n = 256 if quick else 1024
    rss_n = 128 if quick else 512
    repeats = 1 if quick else 2
    copies = 4 if quick else LONG_RUN
    settings = E2E_SETTINGS | (extract_settings or {})
    print(f"networks: {'paper sizes' if paper else 'cpu-small preset sizes (no CUDA)'}; {n} crops "
          f"(3/4 ~{FULL_SIZE[1]}x{FULL_SIZE[0]}, 1/4 ~{LOW_SIZE[1]}x{LOW_SIZE[0]}), batch {settings['batch_size']}, "
          f"{PARTITIONS} partitions; run_extract settings {settings}")
    with tempfile.TemporaryDirectory(prefix="attrgan-bench-") as tmp:
        root = Path(tmp)
        save_bundle(str(root / "bundle"), make_bundle(paper=paper))
        manifest = make_manifest(root, n)
        bundle = load_bundle(str(root / "bundle"), device="cpu")
        pipe = Pipeline(bundle, PipelineConfig())
        size = pipe.input_size
        batch = settings["batch_size"]
        paths = sorted(str(p) for p in (root / "images").glob("*.jpg"))

        # End to end first, while this process holds no torch threads busy: the crops once, then
        # listed `copies` times (a night's run, start-up paid once).
        e2e = end_to_end(root, manifest, settings)
        long = end_to_end(root, make_manifest(root, n, copies=copies), settings)
        steady, startup = long["steady"], long["startup"]

        # Pre-decoded arrays for the in-process measurements (decode cost excluded).
        decoded = [decode_image(Path(p).read_bytes()) for p in paths]
        heights = np.array([d.shape[0] for d in decoded])
        images = np.stack([resize(d, size) for d in decoded])

        def bare() -> None:
            for s in _batches(n, batch):
                pipe(images[s], heights[s])

        def naive() -> None:
            for s in _batches(n, batch):
                crops = [np.asarray(Image.open(p).convert("RGB")) for p in paths[s]]
                pipe(np.stack([resize(c, size) for c in crops]), np.array([c.shape[0] for c in crops]))

        bare_rates = {}
        for threads in sorted({1, os.cpu_count() or 1}):
            with _threads(threads):
                pipe(images[:batch], heights[:batch])  # warm-up (allocators, cuDNN autotune)
                bare_rates[threads] = _rate(bare, n, repeats)
        best_threads = max(bare_rates, key=bare_rates.get)
        bare_rate = bare_rates[best_threads]
        with _threads(best_threads):
            naive_rate = _rate(naive, n, repeats)

        rows = [(f"end to end, whole run of {e2e['rows']:,}", e2e["rate"]),
                (f"end to end, whole run of {long['rows']:,}", long["rate"]), ("end to end, steady state", steady)]
        rows += [(f"bare models, {t} thread{'s' * (t > 1)}", r) for t, r in bare_rates.items()]
        rows += [(f"naive loop, {best_threads} thread{'s' * (best_threads > 1)}", naive_rate)]
        print(f"{'':36s}{'crops/s':>10s}{'vs bare':>10s}{'vs naive':>10s}")
        for name, rate in rows:
            print(f"{name:36s}{rate:10.1f}{rate / bare_rate:10.2f}{rate / naive_rate:10.2f}")
        print(f"end to end: {e2e['rows']} rows in {e2e['seconds']:.1f} s, {long['rows']} in {long['seconds']:.1f} s; "
              f"start-up (actors, bundle load, first batches through) ~{startup:.1f} s; super-resolved "
              f"{e2e['super_resolved']}, reconstructed {e2e['reconstructed']}")
        print(f"targets: end to end (steady) >= 0.8 x bare: {steady / bare_rate:.2f}; >= naive: "
              f"{steady / naive_rate:.2f} (whole run of {e2e['rows']:,}: {e2e['rate'] / bare_rate:.2f}, "
              f"{e2e['rate'] / naive_rate:.2f})")
        print(f"whole run >= naive loop from ~{break_even(startup, steady, naive_rate)} crops "
              f"(start-up paid once, then steady state)")

        # Clean crops only: the conditional pipeline against the classifier alone.
        clean = heights > pipe.sr_max_height
        clean_images, clean_heights = images[clean], heights[clean]
        m = len(clean_images)
        if m == 0:
            raise RuntimeError(f"no crop is taller than the SR rule's {pipe.sr_max_height} rows")
        only = Pipeline(bundle, PipelineConfig(use_superres=False, use_reconstruction=False))
        with _threads(best_threads):
            full_rate = _rate(lambda: [pipe(clean_images[s], clean_heights[s]) for s in _batches(m, batch)], m,
                              repeats)
            only_rate = _rate(lambda: [only(clean_images[s], clean_heights[s]) for s in _batches(m, batch)], m,
                              repeats)
        print(f"clean crops ({m}, in process): restore-and-classify {full_rate:.1f} crops/s, classifier only "
              f"{only_rate:.1f} crops/s (pipeline costs {only_rate / full_rate:.2f}x the classifier)")

        for copies in (1, 4):
            big = make_manifest(root / "rss", rss_n, copies=copies)
            peak, driver = _peak_rss(big, str(root / "bundle"), str(root / f"rss-out-{copies}"), settings)
            print(f"peak RSS at {copies}x manifest ({rss_n * copies} rows): driver {driver / 2**20:.0f} MiB, "
                  f"driver + Ray processes {peak / 2**20:.0f} MiB")


# run_extract settings of the end-to-end rows: on CPUs the actors decode their own batches, so
# two single-threaded actors keep both cores busy with decode and inference in turn (torch with
# 2 threads in a busy process ran 3-5x slower than with 1).
E2E_SETTINGS: dict = {"batch_size": BATCH, "actors": 2, "min_actors": 2, "torch_threads": 1}


def break_even(startup_s: float, steady: float, naive: float) -> str:
    """Crops from which a run with `startup_s` seconds of start-up, then `steady` crops/s, beats a
    loop at `naive` crops/s with no start-up: n / (startup + n / steady) >= naive."""
    if math.isnan(steady):
        return "unknown (no steady state seen)"
    if steady <= naive:
        return "never (steady state is not faster)"
    return f"{math.ceil(startup_s * steady * naive / (steady - naive)):,}"


def _ray_cpus() -> int:
    # At least 4 logical CPUs so decode tasks always fit beside the actors (DESIGN.md).
    return max(4, os.cpu_count() or 1)


@contextlib.contextmanager
def local_ray():
    """A local Ray for the block (shut down after it), unless one is already running."""
    import ray

    from attrgan.ray_setup import init_ray

    if ray.is_initialized():
        yield
        return
    init_ray(num_cpus=_ray_cpus(), log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def end_to_end(root: Path, manifest: str, settings: dict) -> dict:
    """One `run_extract` over `manifest`: rows, seconds, crops/s over the whole run (start-up
    included) and in steady state, and the start-up seconds (`steady_state`)."""
    from attrgan.extract import ExtractConfig, run_extract
    from attrgan.results import results_dataset

    out = root / "results"
    with local_ray():
        config = ExtractConfig(manifest=manifest, bundle=str(root / "bundle"), out=str(out), incremental=False,
                               **settings)
        started = time.time()
        summary = run_extract(config)  # its clock starts after Ray is up
        ended = time.time()
    stamps = results_dataset(str(out)).to_table(columns=["processed_at"])["processed_at"].to_numpy()
    steady, startup = steady_state(stamps, started=started, ended=ended)
    return {"rate": summary.crops_per_s, "steady": steady, "startup": startup, "rows": summary.rows,
            "seconds": summary.seconds, "super_resolved": summary.super_resolved,
            "reconstructed": summary.reconstructed}


def steady_state(processed_at: np.ndarray, *, started: float, ended: float) -> tuple[float, float]:
    """(crops/s once the first batch started, start-up seconds until then) of a run from `started`
    to `ended` (Unix seconds), from its results rows' `processed_at` (when an actor started each
    row's batch). The steady rate still carries the commit at the end and any actor that came up
    late, so it errs low. (A run commits its results when it ends: its own clock cannot tell
    start-up from work.)"""
    first = np.asarray(processed_at, dtype="datetime64[us]").min().astype(np.int64) / 1e6
    return len(processed_at) / (ended - first), first - started


_RSS_CHILD = """
import json, os, sys, ray
from attrgan.extract import ExtractConfig, run_extract
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
ray.init(address="local", num_cpus=int(sys.argv[5]), include_dashboard=False, log_to_driver=False,
         runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled"}})
s = run_extract(ExtractConfig(manifest=sys.argv[1], bundle=sys.argv[2], out=sys.argv[3], incremental=False,
                              **json.loads(sys.argv[4])))
print(json.dumps({"rows": s.rows}))
"""


def _peak_rss(manifest: str, bundle: str, out: str, settings: dict) -> tuple[int, int]:
    """(peak summed RSS of the run's process tree, peak RSS of its driver), sampled every 0.1 s."""
    import psutil

    proc = subprocess.Popen([sys.executable, "-c", _RSS_CHILD, manifest, bundle, out, json.dumps(settings),
                             str(_ray_cpus())], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peaks = {"tree": 0, "driver": 0}
    root = psutil.Process(proc.pid)

    def sample() -> None:
        while proc.poll() is None:
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            rss = {}
            for p in procs:
                try:
                    rss[p.pid] = p.memory_info().rss
                except psutil.Error:  # exited between listing and reading
                    pass
            peaks["tree"] = max(peaks["tree"], sum(rss.values()))
            peaks["driver"] = max(peaks["driver"], rss.get(proc.pid, 0))
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    stdout, _ = proc.communicate()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"extraction subprocess failed with exit code {proc.returncode}")
    json.loads(stdout.strip().splitlines()[-1])
    return peaks["tree"], peaks["driver"]


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
