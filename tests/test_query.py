"""The `where` language of a track search (attrgan.query): precedence, parentheses, comparisons,
names checked against a table, and hostile text refused with the parser's own error."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attrgan.query import MAX_CHARS, MAX_DEPTH, MAX_TERMS, Attribute, BoolOp, Compare, Not, QueryError, parse

KNOWN = ("female", "backpack", "hat", "long_hair")


def tracks(**columns: list) -> pd.DataFrame:
    """Decisions as pandas `boolean` and scores as `Float32`, as load_tracks returns them."""
    data = {}
    for name, values in columns.items():
        data[name] = pd.array([None if v is None else v >= 0.5 for v in values], dtype="boolean")
        data[f"{name}_score"] = pd.array(values, dtype="Float32")
    return pd.DataFrame(data)


def test_not_binds_tighter_than_and_and_and_tighter_than_or():
    assert parse("not female and backpack or hat").tree == BoolOp("or", (
        BoolOp("and", (Not(Attribute("female")), Attribute("backpack"))), Attribute("hat")))
    assert parse("hat or backpack and not female").tree == BoolOp("or", (
        Attribute("hat"), BoolOp("and", (Attribute("backpack"), Not(Attribute("female"))))))
    assert parse("a and b and c").tree == BoolOp("and", (Attribute("a"), Attribute("b"), Attribute("c")))


def test_parentheses_group_and_keywords_take_any_case():
    assert parse("NOT (female OR hat) And backpack").tree == BoolOp("and", (
        Not(BoolOp("or", (Attribute("female"), Attribute("hat")))), Attribute("backpack")))
    assert parse("((female))").tree == Attribute("female")


def test_comparisons_read_scores():
    assert parse("backpack > 0.7").tree == Compare("backpack", ">", 0.7)
    assert parse("female<=.5 and hat>=1").tree == BoolOp("and", (Compare("female", "<=", 0.5),
                                                                Compare("hat", ">=", 1.0)))
    q = parse("backpack > 0.7 and not female")
    t = tracks(backpack=[0.9, 0.6, 0.95, None], female=[0.1, 0.1, 0.8, 0.1])
    assert q.matches(t).tolist() == [True, False, False, False]
    assert q.attributes == ("backpack", "female")


def test_null_decisions_match_neither_a_term_nor_its_negation():
    t = tracks(female=[None, 0.9, 0.1])
    assert parse("female").matches(t).tolist() == [False, True, False]
    assert parse("not female").matches(t).tolist() == [False, False, True]
    assert parse("female or not female").matches(t).tolist() == [False, True, True]


def test_relevance_is_the_mean_score_of_what_the_expression_asks_for():
    t = tracks(backpack=[0.9, 0.6], female=[0.2, 0.4])
    relevance = parse("backpack and not female").relevance(t)
    assert relevance.tolist() == pytest.approx([(0.9 + 0.8) / 2, (0.6 + 0.6) / 2])
    assert parse("female < 0.3").relevance(t).tolist() == pytest.approx([0.8, 0.6])
    assert parse("not backpack >= 0.5").relevance(t).tolist() == pytest.approx([0.1, 0.4])


def test_names_are_checked_against_the_table():
    with pytest.raises(QueryError, match="unknown attribute 'bakpack'; the tracks' attributes are: female, "
                                         "backpack, hat, long_hair"):
        parse("bakpack").check(KNOWN)
    with pytest.raises(QueryError, match="reported per crop, not per track; query the crop results"):
        parse("female and talking").check(KNOWN)
    with pytest.raises(QueryError, match=r"compare the score as `female >= 0.6`"):
        parse("female_score >= 0.6").check(KNOWN)
    parse("female and not (hat or long_hair > 0.2)").check(KNOWN)


@pytest.mark.parametrize("text, message", [
    ("__import__('os')", "unexpected character \"'\" at column 12"),
    ("female; rm -rf /", "unexpected character ';' at column 7"),
    ("female or 1==1", "unexpected character '=' at column 12"),
    ("female or 1", "expected an attribute name, 'not' or '(', found '1' at column 11"),
    ("female.__class__", "a '.' at column 7 is not a number"),
    ("female[0]", "unexpected character '['"),
    ("backpack > 0.7.1", "unexpected '.' after the number 0.7"),
    ("backpack > 2", "scores lie in [0, 1]"),
    ("backpack > -0.5", "unexpected character '-'"),
    ("backpack > 1e3", "unexpected 'e' after the number 1"),
    ("backpack >", "expected a number in [0, 1] after backpack >, found the end"),
    ("backpack == 1", "unexpected character '='"),
    ("female and", "found the end"),
    ("(female", "expected ')', found the end"),
    ("female)", "expected 'and', 'or' or the end, found ')'"),
    ("female backpack", "expected 'and', 'or' or the end, found 'backpack'"),
    ("", "empty"),
    ("   ", "empty"),
    ("femme\u0301", r"unexpected character '\u0301' at column 6: expressions are ASCII"),
    ("female\x00", r"unexpected character '\x00' at column 7"),
    ("female\nor hat", r"unexpected character '\n'"),
    ("lambda: 1", "unexpected character ':'"),
    ("x" * (MAX_CHARS + 1), f"at most {MAX_CHARS} are accepted"),
    ("(" * (MAX_DEPTH + 1) + "female" + ")" * (MAX_DEPTH + 1), f"deeper than {MAX_DEPTH} levels"),
    ("not " * (MAX_DEPTH + 1) + "female", f"deeper than {MAX_DEPTH} levels"),
    (" or ".join(["female"] * (MAX_TERMS + 1)), f"more than {MAX_TERMS} attribute terms"),
])
def test_hostile_or_malformed_text_is_refused_with_a_clear_error(text, message):
    with pytest.raises(QueryError) as error:
        parse(text)
    assert message in str(error.value)
    assert "\n" not in str(error.value) and len(str(error.value)) < 300


def test_the_limits_themselves_still_parse():
    parse("(" * MAX_DEPTH + "female" + ")" * MAX_DEPTH)
    parse(" or ".join(["female"] * MAX_TERMS))
    parse("female" + " " * (MAX_CHARS - len("female")))


def test_a_query_is_never_evaluated_as_python(monkeypatch):
    """The tree is applied by column name: a name that is Python is only a missing column."""
    import builtins

    def refuse(*args, **kwargs):
        raise AssertionError("eval/exec called")

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    q = parse("__import__ and not globals")
    with pytest.raises(QueryError, match="unknown attribute '__import__'"):
        q.check(KNOWN)
    with pytest.raises(KeyError):
        q.matches(tracks(female=[0.5]))


GRAMMAR_WORDS = st.sampled_from(["female", "backpack", "and", "or", "not", "(", ")", ">", ">=", "<", "0.5", "1",
                                 ".", "==", ";", "'", "__import__", "\x00", "é", " ", "\t", "\n", "1e3", "-"])


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(GRAMMAR_WORDS, max_size=60).map(" ".join),
                 st.lists(GRAMMAR_WORDS, max_size=60).map("".join)))
def test_any_text_parses_or_raises_the_parsers_own_error(text):
    try:
        query = parse(text)
    except QueryError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    # what parses names only attribute-shaped words: column names, nothing else
    assert all(name.isidentifier() and name.isascii() and name.lower() not in ("and", "or", "not")
               for name in query.attributes)
    query.check(query.attributes)
