import pytest

from attrgan.attributes import RAP_ATTRIBUTES, snake_case, validate_attributes
from attrgan.config import ConfigError, StorageConfig, parse_overrides


def test_rap_ids():
    assert len(RAP_ATTRIBUTES) == 52 and RAP_ATTRIBUTES[-1] == "occlusion_down"
    assert snake_case("hs-BaldHead") == "hs_bald_head"
    with pytest.raises(ValueError, match="duplicates"):
        validate_attributes(["female", "female"])


def test_storage_from_env():
    cfg = StorageConfig.from_env({"AWS_ENDPOINT_URL": "http://x:1", "ATTRGAN_S3_ANONYMOUS": "true"})
    assert cfg.endpoint_url == "http://x:1" and cfg.anonymous and cfg.use_path_style
    for value in ("maybe", "yes", "1"):  # booleans are true or false, nothing a user must guess
        with pytest.raises(ConfigError, match="boolean"):
            StorageConfig.from_env({"ATTRGAN_S3_ANONYMOUS": value})
    assert parse_overrides(["a.b=1", "c=x"]) == {"a": {"b": 1}, "c": "x"}


def test_s3_server_is_real(s3_bucket, s3_endpoint):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.put_object(Bucket=s3_bucket, Key="k", Body=b"v")
    assert s3.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == b"v"
