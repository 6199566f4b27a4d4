"""The benchmark's derived figures (the measurements themselves live in `make bench`, not in tests)."""

import math

import numpy as np
import pytest

from attrgan.attributes import SYNTH_ATTRIBUTES
from attrgan.devtools.bench.__main__ import main
from attrgan.devtools.bench.agreement import SETTINGS, compare
from attrgan.devtools.bench.extract import break_even, steady_state
from helpers import tiny_bundle


def test_break_even_is_where_the_whole_run_catches_the_naive_loop():
    n = int(break_even(10.0, 300.0, 200.0).replace(",", ""))
    assert n == 6000  # 6000 crops: 10 s start-up + 20 s steady = 30 s, as the loop's 6000 / 200
    assert n / (10.0 + n / 300.0) >= 200.0 > (n - 300) / (10.0 + (n - 300) / 300.0)
    assert break_even(10.0, 200.0, 200.0).startswith("never")
    assert break_even(10.0, float("nan"), 200.0).startswith("unknown")  # no steady state was seen


def test_steady_state_runs_from_the_first_batch_to_the_end_of_the_run():
    started = 1_700_000_000.0
    # The first batch started 20 s into the run; 512 rows later the run ended at 24 s.
    stamps = np.repeat((np.array([20.0, 21.0, 22.0, 23.0]) + started) * 1e6, 128).astype("datetime64[us]")
    steady, startup = steady_state(stamps, started=started, ended=started + 24.0)
    assert steady == pytest.approx(512 / 4.0) and startup == pytest.approx(20.0)


@pytest.mark.usefixtures("one_torch_thread")
def test_agreement_compares_bf16_with_fp32_per_setting():
    # Random small networks: the agreement section's arithmetic, not its figures.
    bundle = tiny_bundle(attributes=SYNTH_ATTRIBUTES, input_size=(80, 32), width=0.25)
    rng = np.random.default_rng(0)
    n = 12
    images = rng.integers(0, 256, size=(n, 80, 32, 3), dtype=np.uint8)
    heights = np.where(np.arange(n) % 3 == 0, 20, 80)  # a third low-resolution: G^S runs in "pipeline"
    attributes = bundle.attributes  # occlusion_down included: compare leaves it out
    labels = rng.choice(np.array([-1, 0, 1], np.int8), size=(n, len(attributes)), p=[0.1, 0.45, 0.45])
    results = compare(bundle, images, heights, labels, attributes)
    assert set(results) == set(SETTINGS)
    for r in results.values():
        assert r.crops == n and 0.0 <= r.agreement <= 1.0
        assert math.isfinite(r.ma_diff_points) and 0.0 <= r.ma_fp32 <= 1.0 and 0.0 <= r.ma_bf16 <= 1.0
        assert 0.0 <= r.max_prob_diff <= 1.0 and r.rate_fp32 > 0 and r.rate_bf16 > 0
        assert 0.0 < r.flip_points < 100.0
    assert results["classifier"].restored == {"fp32": 0, "bf16": 0} and results["classifier"].restorations == ()
    assert results["pipeline"].restored["fp32"] >= n // 3 and "superres" in results["pipeline"].restorations


def test_agreement_is_skipped_without_a_bundle(tmp_path, capsys):
    main(["--only", "agreement", "--bundle", str(tmp_path / "missing")])
    out = capsys.readouterr().out
    assert f"no model bundle at {tmp_path / 'missing'}" in out and "`make demo` first" in out
