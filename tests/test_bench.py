"""The benchmark's derived figures (the measurements themselves live in `make bench`, not in tests)."""

from attrgan.bench.extract import break_even


def test_break_even_is_where_the_whole_run_catches_the_naive_loop():
    n = int(break_even(10.0, 300.0, 200.0).replace(",", ""))
    assert n == 6000  # 6000 crops: 10 s start-up + 20 s steady = 30 s, as the loop's 6000 / 200
    assert n / (10.0 + n / 300.0) >= 200.0 > (n - 300) / (10.0 + (n - 300) / 300.0)
    assert break_even(10.0, 200.0, 200.0).startswith("never")
    assert break_even(10.0, float("nan"), 200.0).startswith("unknown")  # no steady state was seen
