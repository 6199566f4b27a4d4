"""The `where` expressions of a track search: a small boolean language over fused attributes,
parsed, never evaluated as code.

    backpack and not female
    (hat or glasses) and long_trousers > 0.7
    not (female >= 0.6 or skirt)

Grammar (keywords in any case; `not` binds tighter than `and`, `and` tighter than `or`):

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | atom
    atom       := "(" expr ")" | ATTRIBUTE [(">" | ">=" | "<" | "<=") NUMBER]

An ATTRIBUTE alone means its fused decision `<attr>` is true; `ATTRIBUTE > 0.7` compares its fused
score `<attr>_score` (a NUMBER in [0, 1], digits and one '.'). Nothing else is a token: no quotes,
no calls, no attribute access, no other operators. A track whose decision or score is null (no
scored crop) matches neither `x` nor `not x` (three-valued logic).

Safety (docs/security.md "Track search"): the text goes through a hand-written scanner and a
recursive-descent parser into a tree of the four node types below; the tree is applied to a
DataFrame's columns by name, and nothing is ever `eval`ed. Input is bounded before it is scanned
(MAX_CHARS, ASCII only), and the tree too (MAX_DEPTH nesting, MAX_TERMS attribute terms), so any
text parses or raises `QueryError` with a one-line message, in time linear in its length.

Free of torch and Ray (numpy and pandas only).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Union

import numpy as np
import pandas as pd

from attrgan.attributes import MOMENT_LEVEL

MAX_CHARS = 1_000
MAX_DEPTH = 20  # parentheses and `not`s, nested
MAX_TERMS = 50  # attribute terms in one expression
KEYWORDS = ("and", "or", "not")
COMPARISONS = (">=", "<=", ">", "<")
_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_REST = _NAME_START | frozenset("0123456789")
_DIGITS = frozenset("0123456789")
_SHOWN = 40  # characters of a name or token quoted in an error


class QueryError(ValueError):
    """A `where` expression that is not one of the grammar's, or names what the table lacks."""


@dataclasses.dataclass(frozen=True)
class Attribute:
    """`name`: the fused decision `<name>` is true."""

    name: str


@dataclasses.dataclass(frozen=True)
class Compare:
    """`name op value`: the fused score `<name>_score` compared with `value` in [0, 1]."""

    name: str
    op: str
    value: float


@dataclasses.dataclass(frozen=True)
class Not:
    operand: Node


@dataclasses.dataclass(frozen=True)
class BoolOp:
    """`op` ("and" / "or") over two or more operands."""

    op: str
    operands: tuple[Node, ...]


Node = Union[Attribute, Compare, Not, BoolOp]


@dataclasses.dataclass(frozen=True)
class Query:
    """A parsed expression: its text and its tree."""

    text: str
    tree: Node

    @property
    def attributes(self) -> tuple[str, ...]:
        """The attributes it names, in order of first mention."""
        return tuple(dict.fromkeys(name for name, _ in _terms(self.tree, True)))

    def check(self, known: Sequence[str]) -> None:
        """QueryError unless every attribute it names is one of `known` (a track table's
        person-level attributes). A moment-level attribute gets its own message: those stay per crop."""
        for name in self.attributes:
            if name in known:
                continue
            if name in MOMENT_LEVEL:
                raise QueryError(f"{name!r} is a moment-level attribute: it is reported per crop, not per track; "
                                 f"query the crop results instead (attrgan.results.load_results)")
            hint = ""
            if name.endswith("_score") and name[:-len("_score")] in known:
                hint = f" (compare the score as `{name[:-len('_score')]} >= 0.6`)"
            listed = ", ".join(known) if known else "none"
            raise QueryError(f"unknown attribute {_shown(name)}{hint}; the tracks' attributes are: {listed}")

    def matches(self, tracks: pd.DataFrame) -> pd.Series:
        """Boolean mask over `tracks` (rows where the expression is true; null counts as not)."""
        return _mask(self.tree, tracks).fillna(False).astype(bool)

    def relevance(self, tracks: pd.DataFrame) -> pd.Series:
        """How well each row fits, in [0, 1]: the mean over the expression's attribute terms of the
        fused score where the term asks for the attribute (`x`, `x > t`) and 1 - score where it asks
        for its absence (`not x`, `x < t`); terms with a null score are left out of the mean."""
        columns = []
        for name, positive in _terms(self.tree, True):
            score = _scores(tracks, name)
            columns.append(score if positive else 1.0 - score)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a row whose scores are all null: NaN, as meant
            mean = np.nanmean(np.stack(columns, axis=1), axis=1)
        return pd.Series(mean, index=tracks.index, name="relevance")


def _shown(text: str) -> str:
    """`text` quoted for an error: ASCII escapes for anything unprintable, cut to _SHOWN characters."""
    return ascii(text[:_SHOWN]) + ("…" if len(text) > _SHOWN else "")


def _terms(node: Node, positive: bool) -> Iterator[tuple[str, bool]]:
    """(attribute, whether the term asks for it) for each attribute term, in order."""
    if isinstance(node, Attribute):
        yield node.name, positive
    elif isinstance(node, Compare):
        yield node.name, positive == (node.op in (">", ">="))
    elif isinstance(node, Not):
        yield from _terms(node.operand, not positive)
    else:
        for operand in node.operands:
            yield from _terms(operand, positive)


def _scores(tracks: pd.DataFrame, name: str) -> np.ndarray:
    return pd.to_numeric(tracks[f"{name}_score"], errors="coerce").astype("Float64").to_numpy(np.float64, na_value=np.nan)


def _mask(node: Node, tracks: pd.DataFrame) -> pd.Series:
    """Three-valued (pandas `boolean`) truth of `node` per row."""
    if isinstance(node, Attribute):
        return tracks[node.name].astype("boolean")
    if isinstance(node, Compare):
        score = pd.Series(_scores(tracks, node.name), index=tracks.index).astype("Float64")
        result = {">": score > node.value, ">=": score >= node.value, "<": score < node.value,
                  "<=": score <= node.value}[node.op]
        return result.astype("boolean")
    if isinstance(node, Not):
        return ~_mask(node.operand, tracks)
    masks = [_mask(operand, tracks) for operand in node.operands]
    out = masks[0]
    for mask in masks[1:]:
        out = (out & mask) if node.op == "and" else (out | mask)
    return out


# ---------------------------------------------------------------------------------------------
# scanning and parsing


@dataclasses.dataclass(frozen=True)
class _Token:
    kind: str  # "name", "keyword", "number", "op", "(", ")", "end"
    text: str
    column: int  # 1-based, for errors


def _tokens(text: str) -> list[_Token]:
    """The tokens of `text`, in one pass; QueryError at the first character no token starts with."""
    out: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t":
            i += 1
            continue
        start = i
        if c in _NAME_START:
            while i < n and text[i] in _NAME_REST:
                i += 1
            word = text[start:i]
            kind = "keyword" if word.lower() in KEYWORDS else "name"
            out.append(_Token(kind, word.lower() if kind == "keyword" else word, start + 1))
        elif c in _DIGITS or c == ".":
            while i < n and text[i] in _DIGITS:
                i += 1
            if i < n and text[i] == ".":
                i += 1
                while i < n and text[i] in _DIGITS:
                    i += 1
            number = text[start:i]
            if number == ".":
                raise QueryError(f"a '.' at column {start + 1} is not a number (attribute access is not part of "
                                 f"the language)")
            out.append(_Token("number", number, start + 1))
            if i < n and (text[i] in _NAME_REST or text[i] == "."):
                raise QueryError(f"unexpected {_shown(text[i])} after the number {number} at column {i + 1}")
        elif text.startswith((">=", "<="), i):
            out.append(_Token("op", text[i:i + 2], start + 1))
            i += 2
        elif c in "<>":
            out.append(_Token("op", c, start + 1))
            i += 1
        elif c in "()":
            out.append(_Token(c, c, start + 1))
            i += 1
        else:
            raise QueryError(f"unexpected character {_shown(c)} at column {start + 1}: expressions use attribute "
                             f"names, and, or, not, parentheses and >, >=, <, <= with numbers in [0, 1]")
    out.append(_Token("end", "", n + 1))
    return out


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.at = 0
        self.terms = 0

    def peek(self) -> _Token:
        return self.tokens[self.at]

    def take(self) -> _Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def expected(self, what: str) -> QueryError:
        token = self.peek()
        found = "the end" if token.kind == "end" else f"{_shown(token.text)} at column {token.column}"
        return QueryError(f"expected {what}, found {found}")

    def expression(self, depth: int) -> Node:
        return self.chain("or", lambda: self.chain("and", lambda: self.negation(depth)))

    def chain(self, op: str, operand: Callable[[], Node]) -> Node:
        """`operand (op operand)*`: one node, or `op` over all of them."""
        operands = [operand()]
        while self.peek().kind == "keyword" and self.peek().text == op:
            self.take()
            operands.append(operand())
        return operands[0] if len(operands) == 1 else BoolOp(op, tuple(operands))

    def negation(self, depth: int) -> Node:
        if self.peek().kind == "keyword" and self.peek().text == "not":
            self.take()
            return Not(self.negation(self.deeper(depth)))
        return self.atom(depth)

    def deeper(self, depth: int) -> int:
        if depth + 1 > MAX_DEPTH:
            raise QueryError(f"the expression nests deeper than {MAX_DEPTH} levels (parentheses and `not`)")
        return depth + 1

    def atom(self, depth: int) -> Node:
        token = self.peek()
        if token.kind == "(":
            self.take()
            node = self.expression(self.deeper(depth))
            if self.peek().kind != ")":
                raise self.expected("')'")
            self.take()
            return node
        if token.kind != "name":
            raise self.expected("an attribute name, 'not' or '('")
        self.take()
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise QueryError(f"the expression names more than {MAX_TERMS} attribute terms")
        if self.peek().kind != "op":
            return Attribute(token.text)
        op = self.take().text
        if self.peek().kind != "number":
            raise self.expected(f"a number in [0, 1] after {token.text} {op}")
        value = float(self.take().text)
        if not 0.0 <= value <= 1.0:
            raise QueryError(f"scores lie in [0, 1]: {token.text} {op} {_shown(self.tokens[self.at - 1].text)} "
                             f"compares with a number outside it")
        return Compare(token.text, op, value)


def parse(text: str) -> Query:
    """The parsed `where` expression; QueryError (a ValueError) naming the problem otherwise.
    Only the syntax is checked here: `Query.check` checks the names against a table's attributes."""
    if not isinstance(text, str):
        raise QueryError(f"an expression must be text, got {type(text).__name__}")
    if len(text) > MAX_CHARS:
        raise QueryError(f"the expression is {len(text)} characters long; at most {MAX_CHARS} are accepted")
    if not text.isascii():
        first = next(i for i, c in enumerate(text) if not c.isascii())
        raise QueryError(f"unexpected character {_shown(text[first])} at column {first + 1}: expressions are ASCII")
    if not text.strip(" \t"):
        raise QueryError("the expression is empty")
    parser = _Parser(_tokens(text))
    tree = parser.expression(0)
    if parser.peek().kind != "end":
        raise parser.expected("'and', 'or' or the end")
    return Query(text, tree)
