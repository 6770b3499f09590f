"""A tiny, safe parser for state rules such as ``"beta_rel > 0.3 and attention > 50"``.

Grammar (no ``eval``; anything else is a ``RuleSyntaxError`` naming the position)::

    expr   := term ("or" term)*
    term   := factor ("and" factor)*
    factor := NAME OP NUMBER | "(" expr ")"
    OP     := ">" | ">=" | "<" | "<=" | "==" | "!="

Pure Python so a show check can parse rules without loading numpy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

_TOKEN: Final = re.compile(
    r"\s*(?:(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<op>>=|<=|==|!=|>|<)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<paren>[()]))"
)


class RuleSyntaxError(ValueError):
    """A rule that does not parse; the message quotes the rule and the position."""


@dataclass(frozen=True, slots=True)
class Compare:
    name: str
    op: str
    value: float

    def evaluate(self, values: Mapping[str, float], relax: float = 0.0) -> bool:
        """Compare; ``relax`` (0..1) loosens the threshold by that share of its magnitude.

        A relaxed rule is easier to keep true, which gives threshold hysteresis: the rule of
        the current state is evaluated relaxed, so the state does not flicker at the edge.
        NaN (value unknown, e.g. no eSense yet) is never true.
        """
        x = values.get(self.name, math.nan)
        if math.isnan(x):
            return False
        margin = abs(self.value) * relax if self.value != 0 else relax
        if self.op == ">":
            return x > self.value - margin
        if self.op == ">=":
            return x >= self.value - margin
        if self.op == "<":
            return x < self.value + margin
        if self.op == "<=":
            return x <= self.value + margin
        if self.op == "==":
            return abs(x - self.value) <= margin
        return abs(x - self.value) > margin  # "!="


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Expr, ...]

    def evaluate(self, values: Mapping[str, float], relax: float = 0.0) -> bool:
        return any(p.evaluate(values, relax) for p in self.parts)


@dataclass(frozen=True, slots=True)
class AllOf:
    parts: tuple[Expr, ...]

    def evaluate(self, values: Mapping[str, float], relax: float = 0.0) -> bool:
        return all(p.evaluate(values, relax) for p in self.parts)


Expr = Compare | AnyOf | AllOf


def names_in(expr: Expr) -> set[str]:
    """Every value name a parsed rule refers to."""
    if isinstance(expr, Compare):
        return {expr.name}
    out: set[str] = set()
    for p in expr.parts:
        out |= names_in(p)
    return out


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise RuleSyntaxError(f"rule {text!r}: unexpected character at position {pos}: "
                                  f"{text[pos:pos + 10]!r}; write e.g. 'alpha_rel > 0.3 and attention > 50'")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def _peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _fail(self, what: str) -> RuleSyntaxError:
        tok = self._peek()
        where = f"at position {tok[2]} ({tok[1]!r})" if tok else "at the end"
        return RuleSyntaxError(f"rule {self.text!r}: expected {what} {where}; "
                               "write e.g. 'alpha_rel > 0.3 and attention > 50'")

    def _keyword(self, word: str) -> bool:
        tok = self._peek()
        if tok and tok[0] == "name" and tok[1].lower() == word:
            self.i += 1
            return True
        return False

    def parse(self) -> Expr:
        if not self.tokens:
            raise RuleSyntaxError("empty rule; write e.g. 'alpha_rel > 0.3'")
        expr = self._expr()
        if self._peek() is not None:
            raise self._fail("'and', 'or' or the end")
        return expr

    def _expr(self) -> Expr:
        parts = [self._term()]
        while self._keyword("or"):
            parts.append(self._term())
        return parts[0] if len(parts) == 1 else AnyOf(tuple(parts))

    def _term(self) -> Expr:
        parts = [self._factor()]
        while self._keyword("and"):
            parts.append(self._factor())
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

    def _factor(self) -> Expr:
        tok = self._peek()
        if tok and tok[0] == "paren" and tok[1] == "(":
            self.i += 1
            inner = self._expr()
            tok = self._peek()
            if not (tok and tok[0] == "paren" and tok[1] == ")"):
                raise self._fail("')'")
            self.i += 1
            return inner
        if not tok or tok[0] != "name" or tok[1].lower() in ("and", "or"):
            raise self._fail("a feature name")
        name = tok[1]
        self.i += 1
        tok = self._peek()
        if not tok or tok[0] != "op":
            raise self._fail("a comparison (>, >=, <, <=, ==, !=)")
        op = tok[1]
        self.i += 1
        tok = self._peek()
        if not tok or tok[0] != "num":
            raise self._fail("a number")
        self.i += 1
        return Compare(name, op, float(tok[1]))


def parse_rule(text: str) -> Expr:
    """Parse one ``when`` string; raise ``RuleSyntaxError`` with the position on bad input."""
    return _Parser(text).parse()
