"""One writer per output base: the lease object `<out>/_lease.json` (attrgan.lease), on a local disk
and on a real S3 endpoint (moto's server), and its place in the extraction."""

from __future__ import annotations

import datetime as dt
import logging
import os
import pickle
import threading

import pandas as pd
import pyarrow as pa
import pytest

import attrgan.lease as lease_module
from attrgan.config import StorageConfig
from attrgan.data.storage import list_dir
from attrgan.lease import LEASE_NAME, Lease, LeaseHeld, LeaseInfo
from attrgan.fusion import Fusion
from attrgan.sink import CommitGroup, ExtractError, ResultsSink, TrackPlan


@pytest.fixture(scope="module")
def serial_s3():
    """A moto S3 server that answers one request at a time: its conditional writes are then as
    atomic as S3's (threaded, moto checks a condition and writes with no lock between)."""
    import boto3

    from attrgan.devtools.s3server import local_s3_server

    with local_s3_server(threaded=False) as endpoint:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="leases")
        yield StorageConfig(endpoint_url=endpoint, region="us-east-1", retries=1, retry_backoff_s=0.01)


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path):
    """(output base, storage) on a local disk or on S3; a fresh output each test."""
    if request.param == "local":
        return str(tmp_path / "out"), None
    storage = request.getfixturevalue("serial_s3")
    return f"s3://leases/{request.node.name.replace('[', '-').rstrip(']')}/{os.urandom(4).hex()}", storage


def race(out, storage, runs, **acquire):
    """`runs` Lease.acquire calls on `out` released at once; returns (winners, LeaseHeld errors)."""
    leases = [Lease(out, storage, run_id=run) for run in runs]
    start = threading.Barrier(len(leases))
    won, refused = [], []

    def take(lease):
        start.wait()
        try:
            won.append(lease.acquire(heartbeat=False, **acquire))
        except LeaseHeld as exc:
            refused.append(exc)

    threads = [threading.Thread(target=take, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, refused


def later(monkeypatch, seconds):
    """This process's clock `seconds` ahead, as another host's would be after that long."""
    real = lease_module._now
    monkeypatch.setattr(lease_module, "_now", lambda: real() + dt.timedelta(seconds=seconds))


def test_of_racing_runs_exactly_one_takes_the_lease_and_the_others_name_it(place):
    out, storage = place
    for round_ in range(5 if storage else 20):
        runs = [f"run-{round_}-{i}" for i in range(3)]
        won, refused = race(out, storage, runs)
        assert len(won) == 1 and len(refused) == 2
        winner = won[0].run_id
        for exc in refused:
            assert f"run {winner} on host " in str(exc) and "last heartbeat" in str(exc)
            assert "--break-lease" in str(exc)
        # The losers left no trace: the winner's lease is the only object under the output.
        assert [u.rsplit("/", 1)[1] for u in list_dir(out, storage, recursive=True)] == [LEASE_NAME]
        won[0].release()
        assert list_dir(out, storage, recursive=True) == []


def test_a_crashed_holders_lease_is_taken_over_by_one_of_three_takers(place, monkeypatch):
    out, storage = place
    now = lease_module._now
    for round_ in range(2 if storage else 20):
        monkeypatch.setattr(lease_module, "_now", now)
        crashed = Lease(out, storage, run_id=f"crashed-{round_}", ttl_s=1).acquire(heartbeat=False)
        with pytest.raises(LeaseHeld, match=f"leased to run crashed-{round_} "):  # its heartbeat is fresh
            Lease(out, storage, run_id="early").acquire(heartbeat=False)
        later(monkeypatch, 2)  # no heartbeat for longer than its 1 s TTL
        won, refused = race(out, storage, [f"taker-{round_}-{i}" for i in range(3)])
        assert len(won) == 1 and len(refused) == 2
        assert all(f"run {won[0].run_id} " in str(exc) for exc in refused)
        assert f"now held by run {won[0].run_id} " in crashed.lost()
        crashed.release()  # no longer its lease: left alone
        assert won[0].lost() is None
        won[0].release()
        assert list_dir(out, storage, recursive=True) == []


def test_a_heartbeat_that_finds_the_lease_taken_marks_it_lost_and_the_commit_refuses(place, monkeypatch):
    out, storage = place
    holder = Lease(out, storage, run_id="slow", ttl_s=1).acquire(heartbeat=False)
    assert holder.renew() and holder.lost() is None  # a heartbeat while it is ours
    later(monkeypatch, 2)
    taker = Lease(out, storage, run_id="taker").acquire(heartbeat=False)
    assert not holder.renew()
    assert "run slow" in holder.lost() and "now held by run taker on host" in holder.lost()

    sink = ResultsSink(out=out, storage=storage or StorageConfig(), rows_per_file=10,
                       group=CommitGroup(("date=2026-11-25",), (0,)), run_id="slow", schema=pa.schema([]),
                       marker={}, start=0.0, lease=holder, tracks=TrackPlan((), {}, Fusion(), 0.5))
    assert pickle.loads(pickle.dumps(sink)).lease.run_id == "slow"  # write tasks get a copy of the sink
    # The staged files' check is a Ray task; it passes here: the lease is what is under test.
    monkeypatch.setattr("attrgan.sink.check_staged", type("Check", (), {"remote": staticmethod(lambda *a: (None, [], 0))}))
    monkeypatch.setattr("attrgan.sink.ray.get", lambda ref: ref)
    with pytest.raises(ExtractError, match=r"now held by run taker .*partition 'date=2026-11-25' not committed"):
        sink.commit([])
    assert sink.committed == [] and list_dir(f"{out}/date=2026-11-25", storage) == []
    holder.release()
    assert taker.lost() is None
    taker.release()


def test_a_heartbeat_thread_renews_the_lease(tmp_path):
    out = str(tmp_path / "out")
    with Lease(out, run_id="alive", ttl_s=0.3).acquire() as lease:
        first = LeaseInfo.parse(open(f"{out}/{LEASE_NAME}", "rb").read()).heartbeat_at
        for _ in range(200):  # renewed every 0.1 s
            if LeaseInfo.parse(open(f"{out}/{LEASE_NAME}", "rb").read()).heartbeat_at != first:
                break
            threading.Event().wait(0.05)
        else:
            pytest.fail("the heartbeat never renewed the lease")
        assert lease.lost() is None
    assert not os.path.exists(f"{out}/{LEASE_NAME}")


def test_break_lease_removes_a_live_holders_lease_and_logs_who_held_it(place, caplog):
    out, storage = place
    holder = Lease(out, storage, run_id="stuck").acquire(heartbeat=False)
    with caplog.at_level(logging.WARNING, logger="attrgan.lease"):
        breaker = Lease(out, storage, run_id="operator").acquire(break_lease=True, heartbeat=False)
    assert "broken; it was held by run stuck on host" in caplog.text
    assert "was removed" in holder.lost() or "now held by run operator" in holder.lost()
    holder.release()
    assert breaker.lost() is None
    breaker.release()


def test_an_unreadable_lease_object_is_refused_until_broken(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LEASE_NAME).write_bytes(b"not json")
    (out / f"{LEASE_NAME}.takeover").write_bytes(b"")  # the lock of a taker that died holding it
    with pytest.raises(LeaseHeld, match="leased to an unreadable lease object"):
        Lease(str(out), run_id="next").acquire(heartbeat=False)
    Lease(str(out), run_id="next").acquire(break_lease=True, heartbeat=False).release()
    assert list(out.iterdir()) == []


def test_a_second_extraction_on_a_leased_output_exits_2_before_writing(tmp_path, capsys):
    from attrgan.bundle import save_bundle
    from attrgan.cli import extract_config, extract_parser, main
    from attrgan.data.manifest import write_manifest
    from helpers import tiny_bundle

    save_bundle(tmp_path / "bundle", tiny_bundle())
    rows = [{"crop_id": f"c{i}", "image_uri": f"images/c{i}.png", "date": "2026-11-25"} for i in range(2)]
    write_manifest(pd.DataFrame(rows), str(tmp_path / "manifest"), partition_cols=["date"])
    out = str(tmp_path / "out")
    args = ["extract", "--manifest", str(tmp_path / "manifest"), "--bundle", str(tmp_path / "bundle"), "--out", out]
    assert extract_config(extract_parser().parse_args(args[1:] + ["--break-lease"])).break_lease
    assert not extract_config(extract_parser().parse_args(args[1:])).break_lease
    assert extract_config(extract_parser().parse_args(args[1:] + ["--set", "lease_ttl_s=60"])).lease_ttl_s == 60
    with pytest.raises(SystemExit) as bad:
        main(args + ["--set", "lease_ttl_s=0"])
    assert bad.value.code == 2 and "lease_ttl_s must be seconds in [1, 86400], got 0" in capsys.readouterr().err

    running = Lease(out, run_id="20261125T010000-nightly").acquire(heartbeat=False)
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"attrgan extract: error: the output {out} is leased to run "
                           "20261125T010000-nightly on host ")
    assert "started " in line and "last heartbeat " in line and "--break-lease" in line
    assert os.listdir(out) == [LEASE_NAME]  # no staging folder, no probe, no results
    running.release()
