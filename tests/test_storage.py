import multiprocessing
import os

import pyarrow.fs as pafs
import pytest

from attrgan.config import StorageConfig
from attrgan.data import storage as st


def test_scheme_and_paths(tmp_path):
    assert st.is_s3("s3://b/k") and st.is_s3("S3://b/k") and not st.is_s3("/data/x")
    assert st.scheme("s3://b/k") == "s3" and st.scheme("file:///x") == "file" and st.scheme("rel/x") == "file"
    for bad in ("http://host/x.jpg", "gs://b/k"):
        with pytest.raises(ValueError, match=r"unsupported URI scheme.*supported: s3://, file://"):
            st.filesystem(bad)
    with pytest.raises(ValueError, match="no bucket"):
        st.filesystem("s3:///key")
    fs, path = st.filesystem(f"file://{tmp_path}/a.bin")
    assert isinstance(fs, pafs.LocalFileSystem) and path == f"{tmp_path}/a.bin"
    assert st.filesystem("rel/a.bin")[1] == os.path.join(os.getcwd(), "rel/a.bin")
    assert st.join("s3://b/x/", "y/", "/z.parquet") == "s3://b/x/y/z.parquet"
    assert st.join("s3://b", "") == "s3://b" and st.join("/", "a") == "/a"
    assert st.parent("s3://b/x/m.parquet") == "s3://b/x" and st.parent("s3://b/m.parquet") == "s3://b"
    assert st.parent("file:///d/m.parquet") == "file:///d" and st.parent("/d/e/m.parquet") == "/d/e"


def test_s3_filesystem_built_from_config(storage, s3_bucket):
    fs, path = st.filesystem(f"s3://{s3_bucket}/a/b.bin", storage)
    assert isinstance(fs, pafs.S3FileSystem) and path == f"{s3_bucket}/a/b.bin"
    # Endpoint, scheme and region come from the config, not from AWS_ENDPOINT_URL.
    assert fs.region == "us-east-1"
    host = storage.endpoint_url.split("://")[1]
    assert host in repr(fs.__reduce__())
    # One client per process and config: hot paths do not rebuild it.
    assert st.filesystem(f"s3://{s3_bucket}/other", storage)[0] is fs
    assert st.fsspec_filesystem(f"s3://{s3_bucket}/x", storage)[0] is st.fsspec_filesystem("s3://o/y", storage)[0]
    other = StorageConfig(endpoint_url=storage.endpoint_url, region="us-east-1", anonymous=True)
    assert st.filesystem(f"s3://{s3_bucket}/x", other)[0] is not fs
    with pytest.raises(ValueError, match="endpoint_url"):
        st.filesystem("s3://b/k", StorageConfig(endpoint_url="localhost"))


@pytest.mark.parametrize("where", ["s3", "local"])
def test_bytes_round_trip_list_delete(where, storage, s3_bucket, tmp_path):
    root = f"s3://{s3_bucket}/run" if where == "s3" else str(tmp_path / "run")
    st.write_bytes(st.join(root, "p=1", "a.bin"), b"one", storage)
    st.write_bytes(st.join(root, "p=1", "b.bin"), b"two", storage)
    st.write_bytes(st.join(root, "p=2", "a.bin"), b"three", storage)
    assert st.read_bytes(st.join(root, "p=2", "a.bin"), storage) == b"three"
    assert st.exists(st.join(root, "p=1"), storage) and st.exists(st.join(root, "p=1", "a.bin"), storage)
    assert not st.exists(st.join(root, "p=3"), storage)
    assert st.list_dir(root, storage) == [st.join(root, "p=1"), st.join(root, "p=2")]
    assert st.list_dir(root, storage, recursive=True) == [
        st.join(root, "p=1", "a.bin"), st.join(root, "p=1", "b.bin"), st.join(root, "p=2", "a.bin")]
    assert st.list_dir(st.join(root, "missing"), storage) == []
    with pytest.raises(FileNotFoundError, match="p=9/a.bin not found"):
        st.read_bytes(st.join(root, "p=9", "a.bin"), storage)
    st.copy_folder(st.join(root, "p=1"), st.join(root, "p=3"), storage)
    assert st.read_bytes(st.join(root, "p=3", "b.bin"), storage) == b"two"
    st.delete_prefix(st.join(root, "p=1"), storage)
    st.delete_prefix(st.join(root, "p=3"), storage)
    st.delete_prefix(st.join(root, "p=7"), storage)  # missing prefix: nothing to do
    assert st.list_dir(root, storage, recursive=True) == [st.join(root, "p=2", "a.bin")]
    with pytest.raises(ValueError, match="folder/prefix"):
        st.delete_prefix(st.join(root, "p=2", "a.bin"), storage)


def test_fsspec_reads_what_pyarrow_wrote(storage, s3_bucket):
    uri = f"s3://{s3_bucket}/x/y.bin"
    st.write_bytes(uri, b"payload", storage)
    fs, path = st.fsspec_filesystem(uri, storage)
    assert fs.cat_file(path) == b"payload"
    with fs.open(f"{s3_bucket}/x/z.bin", "wb") as f:
        f.write(b"back")
    assert st.read_bytes(f"s3://{s3_bucket}/x/z.bin", storage) == b"back"


def test_missing_bucket_is_not_found_and_roots_are_refused(storage):
    with pytest.raises(FileNotFoundError, match="s3://no-such-bucket-x/k not found"):
        st.read_bytes("s3://no-such-bucket-x/k", storage)
    with pytest.raises(ValueError, match="whole bucket"):
        st.delete_prefix("s3://some-bucket/", storage)
    with pytest.raises(ValueError, match="filesystem root"):
        st.delete_prefix("/", storage)


def _child_reads(uri, storage, queue):
    fs = st.fsspec_filesystem(uri, storage)[0]
    queue.put((st.read_bytes(uri, storage), fs.cat_file(st.fsspec_filesystem(uri, storage)[1]), id(fs)))


def test_clients_are_rebuilt_after_fork(storage, s3_bucket):
    uri = f"s3://{s3_bucket}/f.bin"
    st.write_bytes(uri, b"forked", storage)
    parent_fs = st.fsspec_filesystem(uri, storage)[0]
    assert parent_fs.cat_file(f"{s3_bucket}/f.bin") == b"forked"  # the parent's client is live
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_reads, args=(uri, storage, queue))
    proc.start()
    data, data_fsspec, _ = queue.get(timeout=30)
    proc.join(timeout=30)
    assert proc.exitcode == 0 and data == b"forked" and data_fsspec == b"forked"
