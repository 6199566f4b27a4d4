"""Settings that look like numbers but are not, and allowed prefixes that can match nothing."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

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


# --- Strict types: what YAML 1.1 and Python's int()/float() would otherwise accept ---------------

@dataclasses.dataclass(frozen=True)
class Typed:
    count: int = 1
    share: float = 0.5
    on: bool = False
    name: str = "x"
    since: str | None = None
    storage: StorageConfig = dataclasses.field(default_factory=StorageConfig)


@pytest.mark.parametrize(("item", "message"), [
    ("count=1:30.0", "count: expected a decimal integer, got '1:30.0'"),  # YAML 1.1 base 60: 90.0
    ("count=1_0.0", "count: expected a decimal integer, got '1_0.0'"),
    ("count=١٦", "count: expected a decimal integer, got '١٦'"),
    ("count=１６", "count: expected a decimal integer, got '１６'"),
    ("count=99999999999999999999", "count: 99999999999999999999 is out of range"),
    ("share=1_0.0", "share: expected a decimal number, got '1_0.0'"),
    ("share=１６", "share: expected a decimal number, got '１６'"),
    ("share=.inf", "share: expected a finite number"),
    ("on=1", "on: expected a boolean (true/false), got 1"),
    ("on=yes", "on: expected a boolean (true/false), got 'yes'"),
    ("storage.request_timeout_s=.inf", "storage.request_timeout_s: expected a finite number"),
    ("storage.request_timeout_s=1e9", "storage.request_timeout_s must be at most 3600"),
    ("storage.retries=1000", "storage.retries must be at most 100"),
    ("count.x=1", "count: expected int"),
])
def test_settings_findings_are_refused_naming_the_key(item, message):
    with pytest.raises(ConfigError) as exc:
        load(Typed, overrides=parse_overrides([item]))
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_what_a_user_means_is_kept():
    typed = load(Typed, overrides=parse_overrides(["count=016", "share=1e-3", "on=True", "name=no", "since=2026-11-01"]))
    assert (typed.count, typed.share, typed.on, typed.name, typed.since) == (16, 0.001, True, "no", "2026-11-01")


def test_alias_bombs_and_deep_documents_are_bad_input(tmp_path, capsys):
    from attrgan import cli

    bomb = tmp_path / "bomb.yaml"  # 9^9 strings once expanded
    bomb.write_text("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")))
    with pytest.raises(ConfigError, match=r"bomb.yaml: anchors and aliases \(&name, \*name\) are not allowed"):
        load(Typed, bomb)
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: " + "[" * 50_000 + "]" * 50_000)
    with pytest.raises(ConfigError, match="deep.yaml: nests deeper than 16 levels"):
        load(Typed, deep)
    (tmp_path / "block.yaml").write_text("".join("  " * i + f"k{i}:\n" for i in range(200)))
    with pytest.raises(ConfigError, match="nests deeper than 16 levels"):
        load(Typed, tmp_path / "block.yaml")
    for path in (bomb, deep):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["predict", str(tmp_path), "--bundle", "b", "--config", str(path)])
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == 2 and len(err.splitlines()) == 1 and "error:" in err, err


def test_explicit_tags_cannot_bring_yaml_11_typing_back(tmp_path):
    for i, line in enumerate(("count: !!int 0x10", "flag: !!bool yes", "ratio: !!float 1_0.0", "name: !!str 1")):
        path = tmp_path / f"tagged{i}.yaml"
        path.write_text(line + "\n")
        with pytest.raises(ConfigError, match=r"explicit tags \(tag:yaml.org,2002:\w+\) are not allowed"):
            load(Typed, path)


def _expected(field: str, text: str):
    """What a user writing `field=text` means, or None where the value is to be refused."""
    import math
    import re

    word = text.strip()
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "'\"":  # a quoted scalar: its text
        word = word[1:-1].strip()
    if field == "count":
        return int(word) if re.fullmatch(r"[+-]?[0-9]{1,18}", word, re.ASCII) else None
    if field == "share":
        number = re.fullmatch(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", word, re.ASCII)
        return float(word) if number and math.isfinite(float(word)) else None
    if field == "on":
        return {"true": True, "false": False}.get(word.lower())
    return None


_VALUE = st.one_of(
    st.from_regex(r"[+-]?[0-9_:.eE]{1,8}", fullmatch=True),
    st.sampled_from(["16", "0x10", "1:30", "1:30.0", "1_0.0", "١٦", "１６", ".inf", "-.inf", ".nan", "1e3", "1.5e3",
                     "yes", "no", "on", "off", "y", "1", "0", "true", "False", "TRUE", "~", "null", "[1]", "{a: 1}",
                     "&a 1", "*a", "!!python/object:os.system x", "!!binary aGk=", "2026-11-01", "'16'", "\"１６\""]),
    st.text(max_size=6).filter(lambda t: t.strip()[:1] not in ("'", '"')))  # quoting rules are YAML's


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from(["count", "share", "on"]), text=_VALUE)
@example(field="count", text="\n!").via("a newline before a tag: the message echoed it on two lines")
@example(field="count", text="\x1f").via("a control character")
def test_set_values_are_what_a_user_expects_or_refused(field, text):
    """Any --set value: accepted as what it plainly says, or ConfigError; never another exception."""
    try:
        typed = load(Typed, overrides=parse_overrides([f"{field}={text}"]))
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    expected = _expected(field, text)
    got = getattr(typed, field)
    assert expected is not None and got == expected and type(got) is type(expected), (text, got)
