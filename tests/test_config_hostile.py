"""Settings that look like numbers but are not, and allowed prefixes that can match nothing."""

from __future__ import annotations

import dataclasses

import pytest

from attrgan.config import ConfigError, StorageConfig, from_dict, load, parse_overrides


@dataclasses.dataclass(frozen=True)
class Job:
    actors: int = 2
    occlusion_threshold: float = 0.5
    name: str = "x"


def test_booleans_are_not_numbers():
    with pytest.raises(ConfigError, match=r"^actors: expected int, got True$"):
        from_dict(Job, parse_overrides(["actors=true"]))
    with pytest.raises(ConfigError, match=r"^occlusion_threshold: expected float, got True$"):
        from_dict(Job, parse_overrides(["occlusion_threshold=true"]))
    with pytest.raises(ConfigError, match="expected a number, got NaN"):
        from_dict(Job, {"occlusion_threshold": float("nan")})


def test_hex_and_other_numerals_are_not_ints():
    for text in ("0x10", "0o20", "1_000", "1:30"):
        with pytest.raises(ConfigError, match=f"^actors: expected a decimal integer, got '{text}'$"):
            from_dict(Job, parse_overrides([f"actors={text}"]))
    assert from_dict(Job, parse_overrides(["actors=16", "occlusion_threshold=0.25"])) == Job(16, 0.25)
    assert from_dict(Job, {"actors": "16", "occlusion_threshold": 1}) == Job(16, 1.0)
    with pytest.raises(ConfigError, match="expected an integer"):
        from_dict(Job, {"actors": 2.5})


def test_yaml_errors_are_config_errors(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("actors: [1, 2\n")
    with pytest.raises(ConfigError, match=r"job.yaml: not valid YAML"):
        load(Job, path)
    with pytest.raises(ConfigError, match="cannot read the settings file"):
        load(Job, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_overrides(["name={unclosed"])


@pytest.mark.parametrize(("entry", "hint"), [
    ("bucket", "write 's3://bucket'"), ("file:///data", "write '/data' instead"),
    ("s3:///key", "names no valid bucket"), ("relative/dir", "write 's3://relative/dir'"),
    ("http://host/x", "can match nothing"), ("/data/../etc", "can match nothing"),
])
def test_allowed_prefixes_that_match_nothing_are_refused(entry, hint):
    with pytest.raises(ConfigError, match=f"storage.allowed_prefixes: '{entry}'.*{hint}"):
        StorageConfig(allowed_prefixes=(entry,))
    with pytest.raises(ConfigError):
        StorageConfig.from_env({"ATTRGAN_ALLOWED_PREFIXES": f"s3://ok,{entry}"})


def test_good_prefixes_and_limits():
    cfg = StorageConfig(allowed_prefixes=("s3://frames", "s3://b/images/", "/data/frames", "file://"))
    assert cfg.max_object_bytes == 64 << 20 and cfg.retries == 4
    for field, value in (("max_object_bytes", 0), ("request_timeout_s", -1.0), ("retries", -1)):
        with pytest.raises(ConfigError, match=f"storage.{field} must be"):
            StorageConfig(**{field: value})
