"""Shared fixtures: a real local S3 endpoint (moto's server), one local Ray, the `gpu` marker."""

from __future__ import annotations

import os

import pytest

# Local clusters and jobs in tests run without token auth (Ray 2.60 turns it on by default).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
# precision "auto" means fp32 in tests, so scores compare exactly with plain network calls;
# the bf16 path is tested where a test asks for it (tests/test_precision.py).
os.environ.setdefault("ATTRGAN_CPU_BF16", "0")
# moto accepts any credentials; these keep boto/s3fs/pyarrow from looking for real ones.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_torch_thread():
    """Run the test with one torch thread, restoring the previous count afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def s3_endpoint():
    """URL of a moto S3 server on 127.0.0.1, running for the whole test session."""
    from attrgan.devtools.s3server import local_s3_server

    with local_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A fresh, empty bucket name on the local S3 server."""
    from helpers import new_bucket

    return new_bucket(s3_endpoint)


@pytest.fixture
def storage(s3_endpoint):
    """StorageConfig pointing at the local S3 server."""
    from attrgan.config import StorageConfig

    return StorageConfig(endpoint_url=s3_endpoint, region="us-east-1")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for every integration test (4 logical CPUs, so read tasks always fit)."""
    import ray

    if not ray.is_initialized():
        # address="local": always a fresh local Ray, even when another one runs on this machine.
        from attrgan.ray_setup import start_local_ray

        start_local_ray(num_cpus=4, log_to_driver=False)
    yield ray
    ray.shutdown()
