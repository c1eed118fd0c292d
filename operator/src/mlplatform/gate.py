"""The promotion gate of a TrainingRun: `spec.model.promote`'s `when` expression and "better than the holder".

The `when` expression is a small grammar over the run's metrics and params:

    expression := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | "(" or ")" | comparison
    comparison := operand ("<" | "<=" | ">" | ">=" | "==" | "!=") operand
    operand    := metrics.<name> | params.<name> | number | "string" | 'string'

A name holds the characters MLflow allows apart from the space (letters, digits, `_ - . /`); any other
name goes between backticks: metrics.`val loss`. Strings have no escapes: a value holding one kind of
quote goes between the other kind. Comparisons do not chain (`1 < 2 < 3` is refused, not guessed at).

It is parsed by hand (never `eval`), so that a user's text can do nothing but compare, and every mistake
is reported with its column before any run starts. The module is pure: no I/O, standard library only.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

# Hostile or runaway input stays cheap: the parser recurses once per level of nesting, and the whole
# expression must also fit in a Kubernetes condition message when it is quoted back.
MAX_EXPRESSION_LENGTH: Final = 1000
MAX_NESTING_DEPTH: Final = 32
# Enough to tell two metrics apart in a condition message, short enough to read.
SIGNIFICANT_DIGITS: Final = 6
# A param value can be any text; an explanation quotes at most this many characters of it.
MAX_QUOTED_VALUE: Final = 80

ComparisonOperator: TypeAlias = Literal["<", "<=", ">", ">=", "==", "!="]
Direction: TypeAlias = Literal["lower", "higher"]


class GateSyntaxError(ValueError):
    """A `when` expression that does not parse; the message names the column and what was expected."""

    def __init__(self, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


# ---------------------------------------------------------------------------------------------------------
# The syntax tree


@dataclass(frozen=True)
class MetricRef:
    """`metrics.<name>`: a number the run logged."""

    name: str


@dataclass(frozen=True)
class ParamRef:
    """`params.<name>`: the text the run logged (MLflow keeps every param as a string)."""

    name: str


@dataclass(frozen=True)
class NumberLiteral:
    value: float


@dataclass(frozen=True)
class StringLiteral:
    value: str


Operand: TypeAlias = MetricRef | ParamRef | NumberLiteral | StringLiteral


@dataclass(frozen=True)
class Comparison:
    left: Operand
    op: ComparisonOperator
    right: Operand


@dataclass(frozen=True)
class Not:
    operand: Expression


@dataclass(frozen=True)
class And:
    """All clauses hold; n-ary rather than nested pairs, so a long chain stays one level deep."""

    clauses: tuple[Expression, ...]


@dataclass(frozen=True)
class Or:
    """At least one clause holds."""

    clauses: tuple[Expression, ...]


Expression: TypeAlias = Comparison | Not | And | Or


@dataclass(frozen=True)
class Gate:
    """A parsed `when` expression, with the text it came from."""

    text: str
    root: Expression

    def metrics_referenced(self) -> list[str]:
        """Metric names in order of first use: the first one is the gate's natural key metric."""
        return _unique(ref.name for ref in _references(self.root) if isinstance(ref, MetricRef))

    def params_referenced(self) -> list[str]:
        """Param names in order of first use."""
        return _unique(ref.name for ref in _references(self.root) if isinstance(ref, ParamRef))

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Verdict:
    """Whether the model version moves, and why, in one line fit for a Kubernetes condition message."""

    passed: bool
    explanation: str


def _references(expression: Expression) -> Iterator[Operand]:
    """Every operand, left to right as written."""
    match expression:
        case Comparison(left, _, right):
            yield left
            yield right
        case Not(operand):
            yield from _references(operand)
        case And(clauses) | Or(clauses):
            for clause in clauses:
                yield from _references(clause)


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------------------------
# Tokens

TokenKind: TypeAlias = Literal["metric", "param", "number", "string", "operator", "keyword", "(", ")", "end"]


@dataclass(frozen=True)
class _Token:
    kind: TokenKind
    text: str  # a reference's name, a string's value, a number or operator as written, a keyword
    column: int  # 1-based, as the error messages count


# Longest first, so that "<=" is not read as "<" followed by "=".
_OPERATORS: Final[tuple[ComparisonOperator, ...]] = ("<=", ">=", "==", "!=", "<", ">")
_OPERATOR_CHARACTERS: Final = "<>=!"
_KEYWORDS: Final = frozenset({"and", "or", "not"})
_SOURCES: Final[dict[str, TokenKind]] = {"metrics": "metric", "params": "param"}
_QUOTES: Final = "\"'"
_BACKTICK: Final = "`"

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME = re.compile(r"[A-Za-z0-9_\-./]+")
_UNSIGNED_DECIMAL = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NUMBER = re.compile(r"-?" + _UNSIGNED_DECIMAL)
# What may not follow a number: it would mean a typo such as "1.2.3", "1e" or "2abc".
_AFTER_NUMBER = re.compile(r"[A-Za-z0-9_.]+")
# A param counts as a number when it reads as a decimal; "nan", "inf" or "1_000" stay text.
_DECIMAL = re.compile(r"[+-]?" + _UNSIGNED_DECIMAL)


def _syntax_error(text: str, column: int, expected: str) -> GateSyntaxError:
    # Every whitespace character becomes a space, so the message stays on one line and columns still match.
    shown = "".join(" " if character.isspace() else character for character in text)
    return GateSyntaxError(f'expected {expected} at column {column} in "{shown}"', column)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            tokens.append(_Token("end", "", position + 1))
            return tokens
        token, position = _next_token(text, position)
        tokens.append(token)


def _next_token(text: str, start: int) -> tuple[_Token, int]:
    """The token at `start` and the position after it."""
    character = text[start]
    if character == "(":
        return _Token("(", character, start + 1), start + 1
    if character == ")":
        return _Token(")", character, start + 1), start + 1
    if character in _QUOTES:
        return _string(text, start)
    if character in _OPERATOR_CHARACTERS:
        return _operator(text, start)
    if character in "-.0123456789":
        return _number(text, start)
    if _WORD.match(text, start):
        return _word(text, start)
    expected = f'a name, number, string, operator or parenthesis, not "{character}"'
    raise _syntax_error(text, start + 1, expected)


def _string(text: str, start: int) -> tuple[_Token, int]:
    quote = text[start]
    end = text.find(quote, start + 1)
    if end < 0:
        raise _syntax_error(text, start + 1, f"a closing {quote} for the string")
    return _Token("string", text[start + 1 : end], start + 1), end + 1


def _operator(text: str, start: int) -> tuple[_Token, int]:
    for symbol in _OPERATORS:
        if text.startswith(symbol, start):
            return _Token("operator", symbol, start + 1), start + len(symbol)
    raise _syntax_error(text, start + 1, "a comparison operator (< <= > >= == !=)")


def _number(text: str, start: int) -> tuple[_Token, int]:
    match = _NUMBER.match(text, start)
    if match is None:
        raise _syntax_error(text, start + 1, "a number")
    trailing = _AFTER_NUMBER.match(text, match.end())
    if trailing is not None:
        raise _syntax_error(text, start + 1, f'a number, not "{text[start : trailing.end()]}"')
    return _Token("number", match.group(), start + 1), match.end()


def _word(text: str, start: int) -> tuple[_Token, int]:
    """A keyword or the `metrics.`/`params.` that opens a reference; no other bare word means anything."""
    match = _WORD.match(text, start)
    assert match is not None  # _next_token only calls here on a word
    word, end = match.group(), match.end()
    if word in _KEYWORDS:
        return _Token("keyword", word, start + 1), end
    if word in _SOURCES and text.startswith(".", end):
        return _reference(text, start, _SOURCES[word], end + 1)
    raise _syntax_error(text, start + 1, f'metrics.<name> or params.<name>, not "{word}"')


def _reference(text: str, start: int, kind: TokenKind, name_start: int) -> tuple[_Token, int]:
    if text.startswith(_BACKTICK, name_start):
        return _quoted_reference(text, start, kind, name_start)
    match = _NAME.match(text, name_start)
    if match is None:
        raise _syntax_error(text, name_start + 1, f'a {kind} name after "{text[start:name_start]}"')
    return _Token(kind, match.group(), start + 1), match.end()


def _quoted_reference(text: str, start: int, kind: TokenKind, name_start: int) -> tuple[_Token, int]:
    end = text.find(_BACKTICK, name_start + 1)
    name = text[name_start + 1 : end]
    if end < 0 or "\n" in name:
        raise _syntax_error(text, name_start + 1, f"a closing {_BACKTICK} for the {kind} name")
    if not name:
        raise _syntax_error(text, name_start + 2, f"a {kind} name between the backticks")
    return _Token(kind, name, start + 1), end + 1


# ---------------------------------------------------------------------------------------------------------
# Parsing


def parse_gate(text: str) -> Gate:
    """Parse a `when` expression; a GateSyntaxError names the column and what was expected there."""
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise GateSyntaxError(
            f"expected an expression of at most {MAX_EXPRESSION_LENGTH} characters, not {len(text)}"
        )
    return Gate(text, _Parser(text).parse())


class _Parser:
    """Recursive descent, one method per rule of the grammar in the module docstring."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0

    def parse(self) -> Expression:
        expression = self._or()
        self._expect("end", '"and", "or" or the end of the expression')
        return expression

    def _or(self) -> Expression:
        clauses = [self._and()]
        while self._accept_keyword("or"):
            clauses.append(self._and())
        return clauses[0] if len(clauses) == 1 else Or(tuple(clauses))

    def _and(self) -> Expression:
        clauses = [self._not()]
        while self._accept_keyword("and"):
            clauses.append(self._not())
        return clauses[0] if len(clauses) == 1 else And(tuple(clauses))

    def _not(self) -> Expression:
        opener = self._peek()
        if self._accept_keyword("not"):
            with self._nested(opener):
                return Not(self._not())
        if opener.kind == "(":
            self._advance()
            with self._nested(opener):
                expression = self._or()
            self._expect(")", '"and", "or" or ")"')
            return expression
        return self._comparison()

    def _comparison(self) -> Comparison:
        left_token = self._peek()
        left = self._operand('a comparison, "not" or "("')
        op = self._comparison_operator()
        right_token = self._peek()
        right = self._operand("metrics.<name>, params.<name>, a number or a string")
        self._check_comparable(left_token, right_token)
        if self._peek().kind == "operator":
            raise self._error('"and", "or", ")" or the end of the expression (comparisons do not chain)')
        return Comparison(left, op, right)

    def _operand(self, expected: str) -> Operand:
        token = self._peek()
        match token.kind:
            case "metric":
                operand: Operand = MetricRef(token.text)
            case "param":
                operand = ParamRef(token.text)
            case "number":
                operand = NumberLiteral(float(token.text))
            case "string":
                operand = StringLiteral(token.text)
            case _:
                raise self._error(expected)
        self._advance()
        return operand

    def _comparison_operator(self) -> ComparisonOperator:
        token = self._peek()
        for symbol in _OPERATORS:
            if token.kind == "operator" and token.text == symbol:
                self._advance()
                return symbol
        raise self._error("a comparison operator")

    def _check_comparable(self, left: _Token, right: _Token) -> None:
        """A metric or number against a word can never be meant: refuse it now rather than at every run."""
        for word, other in ((left, right), (right, left)):
            if word.kind == "string" and other.kind in ("metric", "number") and _as_number(word.text) is None:
                raise _syntax_error(self.text, word.column, f"a number to compare with {_describe(other)}")

    @contextmanager
    def _nested(self, opener: _Token) -> Iterator[None]:
        """One more level of "(" or "not", refused past the limit with the column of its opener."""
        self.depth += 1
        if self.depth > MAX_NESTING_DEPTH:
            expected = f'at most {MAX_NESTING_DEPTH} levels of parentheses and "not"'
            raise _syntax_error(self.text, opener.column, expected)
        try:
            yield
        finally:
            self.depth -= 1

    def _accept_keyword(self, keyword: str) -> bool:
        token = self._peek()
        if token.kind == "keyword" and token.text == keyword:
            self._advance()
            return True
        return False

    def _expect(self, kind: TokenKind, expected: str) -> None:
        if self._peek().kind != kind:
            raise self._error(expected)
        self._advance()

    def _peek(self) -> _Token:
        return self.tokens[self.index]

    def _advance(self) -> None:
        self.index = min(self.index + 1, len(self.tokens) - 1)

    def _error(self, expected: str) -> GateSyntaxError:
        return _syntax_error(self.text, self._peek().column, expected)


def _describe(token: _Token) -> str:
    if token.kind in ("metric", "param"):
        return _reference_text(token.kind, token.text)
    return token.text


# ---------------------------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True)
class _Outcome:
    passed: bool
    explanation: str
    joined: bool = False  # several clauses joined by "and"/"or": parenthesised inside another join


_HOLDS: Final[dict[ComparisonOperator, Callable[[Any, Any], Any]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def evaluate(gate: Gate, metrics: Mapping[str, float], params: Mapping[str, str]) -> Verdict:
    """Whether the run's metrics and params pass the gate, and the numbers that decided it.

    A metric or param the run did not log fails the whole gate, whatever branch it sits in: a typo in a
    name must not pass quietly through an "or", nor through a "not".
    """
    missing = _not_logged(gate, metrics, params)
    if missing:
        return Verdict(False, "; ".join(missing))
    outcome = _explain(gate.root, metrics, params)
    return Verdict(outcome.passed, outcome.explanation)


def _not_logged(gate: Gate, metrics: Mapping[str, float], params: Mapping[str, str]) -> list[str]:
    metric_names = [name for name in gate.metrics_referenced() if name not in metrics]
    param_names = [name for name in gate.params_referenced() if name not in params]
    return [f'metric "{name}" was not logged by the run' for name in metric_names] + [
        f'param "{name}" was not logged by the run' for name in param_names
    ]


def _explain(expression: Expression, metrics: Mapping[str, float], params: Mapping[str, str]) -> _Outcome:
    match expression:
        case Comparison():
            return _explain_comparison(expression, metrics, params)
        case Not(operand):
            inner = _explain(operand, metrics, params)
            return _Outcome(not inner.passed, f"not ({inner.explanation}) is {_truth(not inner.passed)}")
        case And(clauses):
            return _explain_junction([_explain(c, metrics, params) for c in clauses], "and")
        case Or(clauses):
            return _explain_junction([_explain(c, metrics, params) for c in clauses], "or")


def _explain_junction(outcomes: list[_Outcome], keyword: Literal["and", "or"]) -> _Outcome:
    """Only the clauses that decided: for "and" the false ones if any, for "or" the true ones if any."""
    deciding_value = keyword == "or"
    passed = any(o.passed for o in outcomes) if deciding_value else all(o.passed for o in outcomes)
    deciding = [o for o in outcomes if o.passed == deciding_value] or outcomes
    if len(deciding) == 1:
        return deciding[0]
    text = f" {keyword} ".join(f"({o.explanation})" if o.joined else o.explanation for o in deciding)
    return _Outcome(passed, text, joined=True)


def _explain_comparison(
    comparison: Comparison, metrics: Mapping[str, float], params: Mapping[str, str]
) -> _Outcome:
    left = _value(comparison.left, metrics, params)
    right = _value(comparison.right, metrics, params)
    passed = _compare_values(comparison.op, left, right)
    precise = _look_alike(left, right)
    shown_left = _show_operand(comparison.left, left, precise)
    shown_right = _show_operand(comparison.right, right, precise)
    return _Outcome(passed, f"{shown_left} {comparison.op} {shown_right} is {_truth(passed)}")


def _value(operand: Operand, metrics: Mapping[str, float], params: Mapping[str, str]) -> float | str:
    match operand:
        case MetricRef(name):
            return float(metrics[name])
        case ParamRef(name):
            return params[name]
        case NumberLiteral(value) | StringLiteral(value):
            return value


def _compare_values(op: ComparisonOperator, left: float | str, right: float | str) -> bool:
    """Numerically when both sides read as numbers (params are text: "0.50" == 0.5), else as text."""
    left_number, right_number = _as_number(left), _as_number(right)
    if left_number is not None and right_number is not None:
        return bool(_HOLDS[op](left_number, right_number))
    return bool(_HOLDS[op](_as_text(left), _as_text(right)))


def _as_number(value: float | str) -> float | None:
    if isinstance(value, float):
        return value
    return float(value) if _DECIMAL.fullmatch(value.strip()) else None


def _as_text(value: float | str) -> str:
    return value if isinstance(value, str) else _format_number(value)


def _look_alike(left: float | str, right: float | str) -> bool:
    """Two different numbers that print the same at the usual precision: show them in full."""
    if isinstance(left, float) and isinstance(right, float):
        return left != right and _format_number(left) == _format_number(right)
    return False


def _show_operand(operand: Operand, value: float | str, precise: bool) -> str:
    shown = _format_number(value, precise) if isinstance(value, float) else _quote(value)
    match operand:
        case MetricRef(name):
            return f"{_reference_text('metric', name)} = {shown}"
        case ParamRef(name):
            return f"{_reference_text('param', name)} = {shown}"
        case NumberLiteral() | StringLiteral():
            return shown


def _reference_text(kind: str, name: str) -> str:
    """A reference as it would be written in a `when` expression."""
    prefix = "metrics" if kind == "metric" else "params"
    return f"{prefix}.{name}" if _NAME.fullmatch(name) else f"{prefix}.{_BACKTICK}{name}{_BACKTICK}"


def _format_number(value: float, precise: bool = False) -> str:
    return repr(value) if precise else f"{value:.{SIGNIFICANT_DIGITS}g}"


def _quote(value: str) -> str:
    """A param value on one line (JSON escapes newlines and quotes), cut short if it is long."""
    if len(value) > MAX_QUOTED_VALUE:
        value = value[: MAX_QUOTED_VALUE - 1] + "…"
    return json.dumps(value, ensure_ascii=False)


def _truth(value: bool) -> str:
    return "true" if value else "false"


# ---------------------------------------------------------------------------------------------------------
# Better than the current holder


_BETTER: Final[dict[Direction, tuple[str, Callable[[float, float], bool]]]] = {
    "lower": ("<", operator.lt),
    "higher": (">", operator.gt),
}


def compare(candidate: float | None, holder: float | None, metric: str, direction: Direction) -> Verdict:
    """Whether the candidate's metric is strictly better than the current holder's; a tie keeps the holder.

    None means the value is not there: for the holder, no version holds the alias yet or it lacks the
    metric, so there is nothing to beat; for the candidate, the run did not log it, so it cannot win.
    NaN counts as not there, since it compares false with everything.
    """
    if candidate is None:
        return Verdict(False, f'metric "{metric}" was not logged by the run')
    if math.isnan(candidate):
        return Verdict(False, f"{metric} of the run is NaN")
    if holder is None or math.isnan(holder):
        shown = _format_number(candidate)
        return Verdict(True, f"{metric} {shown} wins: no current holder has {metric} to beat")
    symbol, is_better = _BETTER[direction]
    precise = _look_alike(candidate, holder)
    shown_candidate, shown_holder = _format_number(candidate, precise), _format_number(holder, precise)
    if is_better(candidate, holder):
        return Verdict(True, f"{metric} {shown_candidate} {symbol} {shown_holder} of the current holder")
    return Verdict(False, f"{metric} {shown_candidate} is not {symbol} {shown_holder} of the current holder")
