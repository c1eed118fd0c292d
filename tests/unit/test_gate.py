"""The promotion gate: the `when` grammar, its errors, its verdicts and their explanations, and `compare`."""

from __future__ import annotations

import dataclasses
import math

import pytest

from mlplatform.gate import (
    MAX_EXPRESSION_LENGTH,
    MAX_NESTING_DEPTH,
    And,
    Comparison,
    Direction,
    Gate,
    GateSyntaxError,
    MetricRef,
    Not,
    NumberLiteral,
    Or,
    ParamRef,
    StringLiteral,
    Verdict,
    compare,
    evaluate,
    parse_gate,
)

A = Comparison(MetricRef("a"), "<", NumberLiteral(1.0))
B = Comparison(MetricRef("b"), "<", NumberLiteral(2.0))
C = Comparison(MetricRef("c"), "<", NumberLiteral(3.0))


def check(
    text: str, metrics: dict[str, float] | None = None, params: dict[str, str] | None = None
) -> Verdict:
    return evaluate(parse_gate(text), metrics or {}, params or {})


def syntax_error(text: str) -> GateSyntaxError:
    with pytest.raises(GateSyntaxError) as caught:
        parse_gate(text)
    return caught.value


# --- the grammar ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "root"),
    [
        ("metrics.a < 1", A),
        ("metrics.a < 1 or metrics.b < 2 and metrics.c < 3", Or((A, And((B, C))))),
        ("metrics.a < 1 and metrics.b < 2 or metrics.c < 3", Or((And((A, B)), C))),
        ("(metrics.a < 1 or metrics.b < 2) and metrics.c < 3", And((Or((A, B)), C))),
        ("not metrics.a < 1 and metrics.b < 2", And((Not(A), B))),
        ("not (metrics.a < 1 and metrics.b < 2)", Not(And((A, B)))),
        ("not not metrics.a < 1", Not(Not(A))),
        ("metrics.a < 1 or not metrics.b < 2", Or((A, Not(B)))),
        ("metrics.a < 1 and metrics.b < 2 and metrics.c < 3", And((A, B, C))),
        ("((metrics.a < 1))", A),
        ("metrics.a<1 and(metrics.b<2)", And((A, B))),
        ("\n  metrics.a < 1\n  and metrics.b < 2\n", And((A, B))),
    ],
)
def test_precedence_is_not_then_and_then_or(text: str, root: object) -> None:
    assert parse_gate(text).root == root


@pytest.mark.parametrize(
    ("text", "operand"),
    [
        ("metrics.x < 0.8", NumberLiteral(0.8)),
        ("metrics.x < -1e-3", NumberLiteral(-0.001)),
        ("metrics.x < 2", NumberLiteral(2.0)),
        ("metrics.x < .5", NumberLiteral(0.5)),
        ("metrics.x < 1E3", NumberLiteral(1000.0)),
        ("metrics.x < 2.", NumberLiteral(2.0)),
        ('metrics.x < "0.5"', StringLiteral("0.5")),
        ("metrics.x < '0.5'", StringLiteral("0.5")),
        ("metrics.x < params.y", ParamRef("y")),
        ("metrics.x < metrics.y", MetricRef("y")),
    ],
)
def test_operands(text: str, operand: object) -> None:
    root = parse_gate(text).root
    assert isinstance(root, Comparison)
    assert (root.left, root.right) == (MetricRef("x"), operand)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("metrics.val_loss < 1", "val_loss"),
        ("metrics.val-loss < 1", "val-loss"),
        ("metrics.eval/loss.mean < 1", "eval/loss.mean"),
        ("metrics.2nd < 1", "2nd"),
        ("metrics.and < 1", "and"),
        ("metrics.`val loss` < 1", "val loss"),
        ("metrics.`accuracy (top-5)` < 1", "accuracy (top-5)"),
        ('metrics.`it\'s "x"` < 1', 'it\'s "x"'),
    ],
)
def test_metric_names_as_mlflow_writes_them(text: str, name: str) -> None:
    assert parse_gate(text).metrics_referenced() == [name]


def test_strings_take_either_quote_and_hold_the_other() -> None:
    assert check('params.s == "it\'s"', params={"s": "it's"}).passed
    assert check("params.s == 'say \"hi\"'", params={"s": 'say "hi"'}).passed
    assert check("params.s == ''", params={"s": ""}).passed
    assert check("params.`my param` == 'a b'", params={"my param": "a b"}).passed


def test_references_in_order_of_first_use() -> None:
    gate = parse_gate(
        "metrics.rmse < 1 and (params.b == 'x' or metrics.r2 > 0.5) "
        "and not metrics.rmse > params.a and params.b != 'y'"
    )
    assert gate.metrics_referenced() == ["rmse", "r2"]
    assert gate.params_referenced() == ["b", "a"]
    assert parse_gate("1 < 2").metrics_referenced() == []


def test_gate_and_verdict_are_frozen() -> None:
    gate = parse_gate("metrics.a < 1")
    assert str(gate) == "metrics.a < 1"
    assert gate == Gate("metrics.a < 1", A)
    with pytest.raises(dataclasses.FrozenInstanceError):
        gate.text = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Verdict(True, "").passed = False  # type: ignore[misc]


# --- syntax errors ----------------------------------------------------------------------------------------


NAME_OR_PARAM = "metrics.<name> or params.<name>"
COMPARISON_START = 'a comparison, "not" or "("'
OPERAND = "metrics.<name>, params.<name>, a number or a string"
AFTER_CLAUSE = '"and", "or" or the end of the expression'
CHAINED = '"and", "or", ")" or the end of the expression (comparisons do not chain)'
ANY_OPERATOR = "a comparison operator (< <= > >= == !=)"


@pytest.mark.parametrize(
    ("text", "column", "expected"),
    [
        ("metrics.rmse 0.8", 14, "a comparison operator"),
        ("", 1, COMPARISON_START),
        ("   ", 4, COMPARISON_START),
        ("metrics.a < 1 and", 18, COMPARISON_START),
        ("metrics.a < 1 or ", 18, COMPARISON_START),
        ("metrics.a < 1 and not", 22, COMPARISON_START),
        ("and metrics.a < 1", 1, COMPARISON_START),
        ("metrics.a <", 12, OPERAND),
        ("metrics.a < and", 13, OPERAND),
        ("foo.x < 1", 1, f'{NAME_OR_PARAM}, not "foo"'),
        ("metrics < 1", 1, f'{NAME_OR_PARAM}, not "metrics"'),
        ("metric.a < 1", 1, f'{NAME_OR_PARAM}, not "metric"'),
        ("metrics.a < 1 AND metrics.b < 2", 15, f'{NAME_OR_PARAM}, not "AND"'),
        ("metrics.a < true", 13, f'{NAME_OR_PARAM}, not "true"'),
        ("__import__('os').system('true')", 1, f'{NAME_OR_PARAM}, not "__import__"'),
        ("(metrics.a < 1", 15, '"and", "or" or ")"'),
        ("((metrics.a < 1)", 17, '"and", "or" or ")"'),
        ("metrics.a < 1)", 14, AFTER_CLAUSE),
        ("metrics.a < 1 metrics.b < 2", 15, AFTER_CLAUSE),
        ("()", 2, COMPARISON_START),
        ("metrics. < 1", 9, 'a metric name after "metrics."'),
        ("params.", 8, 'a param name after "params."'),
        ("metrics.`` < 1", 10, "a metric name between the backticks"),
        ("metrics.`val loss < 1", 9, "a closing ` for the metric name"),
        ("0.8", 4, "a comparison operator"),
        ("metrics.a", 10, "a comparison operator"),
        ("1 < 2 < 3", 7, CHAINED),
        ("(metrics.a < 1 == 2)", 16, CHAINED),
        ("metrics.a = 1", 11, ANY_OPERATOR),
        ("metrics.a ! 1", 11, ANY_OPERATOR),
        ("metrics.a << 1", 12, OPERAND),
        ("metrics.a < 1.2.3", 13, 'a number, not "1.2.3"'),
        ("metrics.a < 1e", 13, 'a number, not "1e"'),
        ("metrics.a < 1and metrics.b < 2", 13, 'a number, not "1and"'),
        ("metrics.a < -", 13, "a number"),
        ("params.a == 'x", 13, "a closing ' for the string"),
        ('params.a == "x', 13, 'a closing " for the string'),
        ("metrics.a < 1 && metrics.b < 2", 15, 'a name, number, string, operator or parenthesis, not "&"'),
        ("metrics.rmse < 'abc'", 16, "a number to compare with metrics.rmse"),
        ("'abc' >= metrics.`val loss`", 1, "a number to compare with metrics.`val loss`"),
        ("1 == 'one'", 6, "a number to compare with 1"),
    ],
)
def test_syntax_errors_name_the_column_and_what_was_expected(text: str, column: int, expected: str) -> None:
    error = syntax_error(text)
    assert error.message == f'expected {expected} at column {column} in "{text}"'
    assert error.column == column


def test_syntax_error_is_a_value_error_with_its_column() -> None:
    error = syntax_error("metrics.rmse 0.8")
    assert isinstance(error, ValueError)
    assert error.column == 14
    assert str(error) == error.message


def test_syntax_error_message_stays_on_one_line_with_columns_intact() -> None:
    error = syntax_error("metrics.a < 1\nand\tmetrics.b 2")
    assert error.message == 'expected a comparison operator at column 29 in "metrics.a < 1 and metrics.b 2"'


def test_expression_length_is_limited() -> None:
    longest = "metrics.a < 1".ljust(MAX_EXPRESSION_LENGTH)
    assert parse_gate(longest).root == A
    error = syntax_error(longest + " ")
    assert error.message == f"expected an expression of at most {MAX_EXPRESSION_LENGTH} characters, not 1001"


def test_nesting_depth_is_limited() -> None:
    deepest = "(" * MAX_NESTING_DEPTH + "metrics.a < 1" + ")" * MAX_NESTING_DEPTH
    assert parse_gate(deepest).root == A
    too_deep = "(" + deepest + ")"
    assert f"expected at most {MAX_NESTING_DEPTH} levels" in syntax_error(too_deep).message
    assert syntax_error(too_deep).column == MAX_NESTING_DEPTH + 1
    assert (
        syntax_error("not " * (MAX_NESTING_DEPTH + 1) + "metrics.a < 1").column == 4 * MAX_NESTING_DEPTH + 1
    )
    mixed = "not (" * (MAX_NESTING_DEPTH // 2) + "metrics.a < 1" + ")" * (MAX_NESTING_DEPTH // 2)
    assert parse_gate(mixed).metrics_referenced() == ["a"]
    assert "levels" in syntax_error("not " + mixed).message


# --- evaluation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "below", "equal", "above"),
    [
        ("<", True, False, False),
        ("<=", True, True, False),
        (">", False, False, True),
        (">=", False, True, True),
        ("==", False, True, False),
        ("!=", True, False, True),
    ],
)
def test_each_comparison_operator(op: str, below: bool, equal: bool, above: bool) -> None:
    for value, expected in ((0.5, below), (1.0, equal), (2.0, above)):
        assert check(f"metrics.x {op} 1", {"x": value}).passed is expected, (op, value)
        assert check(f"params.x {op} 1", params={"x": str(value)}).passed is expected, (op, value)


@pytest.mark.parametrize(
    ("text", "params", "passed"),
    [
        ('params.alpha == "0.5"', {"alpha": "0.5"}, True),
        ('params.alpha == "0.5"', {"alpha": "0.50"}, True),  # both read as numbers
        ("params.alpha == 0.5", {"alpha": "5e-1"}, True),
        ("params.alpha < 10", {"alpha": "9"}, True),  # as text, "9" > "10"
        ("params.epochs >= 10", {"epochs": "100"}, True),
        ("params.solver == 'adam'", {"solver": "adam"}, True),
        ("params.solver != 'adam'", {"solver": "sgd"}, True),
        ("params.solver < 'b'", {"solver": "adam"}, True),  # text order
        ("params.solver == 1", {"solver": "adam"}, False),
        ("params.solver != 1", {"solver": "adam"}, True),
        ("params.flag == 'True'", {"flag": "True"}, True),
        ("params.x == 'nan'", {"x": "nan"}, True),  # "nan" is text, not a number that equals nothing
        ("params.a == params.b", {"a": "1.0", "b": "1"}, True),
        ("params.a == params.b", {"a": "x", "b": "x"}, True),
        ("params.a < params.b", {"a": "2", "b": "10"}, True),
    ],
)
def test_params_compare_as_numbers_when_both_sides_are_numbers(
    text: str, params: dict[str, str], passed: bool
) -> None:
    assert check(text, params=params).passed is passed


def test_metric_against_a_param() -> None:
    assert check("metrics.x == params.y", {"x": 2.0}, {"y": "2"}).passed
    assert check("metrics.x < params.y", {"x": 2.0}, {"y": "10"}).passed
    assert not check("metrics.x == params.y", {"x": 2.0}, {"y": "two"}).passed


@pytest.mark.parametrize(
    ("metrics", "passed"),
    [
        ({"r2": 0.5, "mae": 50.0}, True),
        ({"r2": 0.1, "mae": 30.0}, True),
        ({"r2": 0.1, "mae": 50.0}, False),
    ],
)
def test_the_example_gate(metrics: dict[str, float], passed: bool) -> None:
    text = "(metrics.r2 >= 0.3 or metrics.mae < 40) and not params.l1_ratio == '1.0'"
    assert check(text, metrics, {"l1_ratio": "0.5"}).passed is passed
    assert not check(text, metrics, {"l1_ratio": "1"}).passed


def test_precedence_decides_the_verdict() -> None:
    metrics = {"a": 0.0, "b": 5.0, "c": 5.0}  # a passes, b and c fail
    assert check("metrics.a < 1 or metrics.b < 2 and metrics.c < 3", metrics).passed
    assert not check("(metrics.a < 1 or metrics.b < 2) and metrics.c < 3", metrics).passed
    assert not check("not metrics.a < 1 or metrics.b < 2", metrics).passed
    assert check("not (metrics.b < 2 and metrics.a < 1)", metrics).passed


def test_nan_metric_fails_every_comparison_but_not_equal() -> None:
    assert not check("metrics.x < 1 or metrics.x >= 1", {"x": math.nan}).passed
    assert check("metrics.x != 1", {"x": math.nan}).passed


def test_literal_against_literal() -> None:
    assert check("1 < 2").passed
    assert check("'a' < 'b'").passed
    assert check("'1.0' == 1").passed


# --- values that were not logged --------------------------------------------------------------------------


def test_a_metric_not_logged_fails_the_gate() -> None:
    verdict = check("metrics.rmse < 0.8", {"r2": 0.9})
    assert verdict == Verdict(False, 'metric "rmse" was not logged by the run')


def test_a_param_not_logged_fails_the_gate() -> None:
    verdict = check("params.alpha == '0.5'", {}, {"l1_ratio": "0.5"})
    assert verdict == Verdict(False, 'param "alpha" was not logged by the run')


def test_a_value_not_logged_fails_even_where_the_rest_would_pass() -> None:
    # A typo in a name must not slip through an "or" nor turn true under a "not".
    assert not check("metrics.r2 > 0.5 or metrics.rmse < 0.8", {"r2": 0.9}).passed
    assert not check("not metrics.rmse < 0.8", {}).passed
    verdict = check("metrics.`val loss` < 1 or params.a == '1' or metrics.b < 1", {"b": 0.0})
    assert verdict.explanation == (
        'metric "val loss" was not logged by the run; param "a" was not logged by the run'
    )


# --- explanations -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "metrics", "params", "explanation"),
    [
        ("metrics.rmse < 0.8", {"rmse": 53.2}, {}, "metrics.rmse = 53.2 < 0.8 is false"),
        ("metrics.rmse < 0.8", {"rmse": 0.123456789}, {}, "metrics.rmse = 0.123457 < 0.8 is true"),
        ("metrics.n > 1000", {"n": 1234567.0}, {}, "metrics.n = 1.23457e+06 > 1000 is true"),
        ("metrics.x < -1e-3", {"x": -0.5}, {}, "metrics.x = -0.5 < -0.001 is true"),
        ('params.alpha == "0.5"', {}, {"alpha": "0.5"}, 'params.alpha = "0.5" == "0.5" is true'),
        ("metrics.`val loss` <= 2", {"val loss": 2.0}, {}, "metrics.`val loss` = 2 <= 2 is true"),
        ("metrics.a < metrics.b", {"a": 1.0, "b": 2.0}, {}, "metrics.a = 1 < metrics.b = 2 is true"),
        (
            "metrics.rmse < 0.8 and params.alpha == '0.5'",
            {"rmse": 53.2},
            {"alpha": "0.5"},
            "metrics.rmse = 53.2 < 0.8 is false",
        ),
        (
            "metrics.rmse < 0.8 and params.alpha == '0.5'",
            {"rmse": 0.5},
            {"alpha": "0.5"},
            'metrics.rmse = 0.5 < 0.8 is true and params.alpha = "0.5" == "0.5" is true',
        ),
        (
            "metrics.a < 1 and metrics.b < 1 and metrics.c < 1",
            {"a": 0.0, "b": 2.0, "c": 3.0},
            {},
            "metrics.b = 2 < 1 is false and metrics.c = 3 < 1 is false",
        ),
        (
            "metrics.a < 1 or metrics.b < 1",
            {"a": 5.0, "b": 0.5},
            {},
            "metrics.b = 0.5 < 1 is true",
        ),
        (
            "metrics.a < 1 or metrics.b < 1",
            {"a": 5.0, "b": 6.0},
            {},
            "metrics.a = 5 < 1 is false or metrics.b = 6 < 1 is false",
        ),
        (
            "(metrics.r2 >= 0.3 or metrics.mae < 40) and not params.l1_ratio == '1.0'",
            {"r2": 0.1, "mae": 50.0},
            {"l1_ratio": "0.5"},
            "metrics.r2 = 0.1 >= 0.3 is false or metrics.mae = 50 < 40 is false",
        ),
        (
            "(metrics.r2 >= 0.3 or metrics.mae < 40) and not params.l1_ratio == '1.0'",
            {"r2": 0.5, "mae": 30.0},
            {"l1_ratio": "0.5"},
            "(metrics.r2 = 0.5 >= 0.3 is true or metrics.mae = 30 < 40 is true)"
            ' and not (params.l1_ratio = "0.5" == "1.0" is false) is true',
        ),
        (
            "not metrics.a < 1",
            {"a": 0.0},
            {},
            "not (metrics.a = 0 < 1 is true) is false",
        ),
    ],
)
def test_explanations_show_the_deciding_numbers(
    text: str, metrics: dict[str, float], params: dict[str, str], explanation: str
) -> None:
    assert check(text, metrics, params).explanation == explanation


def test_explanation_shows_full_precision_where_six_digits_would_hide_the_difference() -> None:
    verdict = check("metrics.acc >= 0.8", {"acc": 0.79999999})
    assert verdict == Verdict(False, "metrics.acc = 0.79999999 >= 0.8 is false")


def test_explanation_is_one_line_and_short_for_any_param_value() -> None:
    verdict = check("params.note == 'x'", params={"note": 'line one\nline "two"' + "z" * 200})
    assert "\n" not in verdict.explanation
    assert "\\n" in verdict.explanation and '\\"two\\"' in verdict.explanation
    assert len(verdict.explanation) < 150
    assert "…" in verdict.explanation


# --- better than the current holder -----------------------------------------------------------------------


def test_compare_lower_is_better() -> None:
    assert compare(52.1, 53.4, "rmse", "lower") == Verdict(True, "rmse 52.1 < 53.4 of the current holder")
    assert compare(53.4, 52.1, "rmse", "lower") == Verdict(
        False, "rmse 53.4 is not < 52.1 of the current holder"
    )


def test_compare_higher_is_better() -> None:
    assert compare(0.91, 0.9, "r2", "higher") == Verdict(True, "r2 0.91 > 0.9 of the current holder")
    assert compare(0.8, 0.9, "r2", "higher") == Verdict(False, "r2 0.8 is not > 0.9 of the current holder")


@pytest.mark.parametrize("direction", ["lower", "higher"])
def test_compare_a_tie_keeps_the_holder(direction: Direction) -> None:
    verdict = compare(0.5, 0.5, "r2", direction)
    assert not verdict.passed
    assert "0.5 is not" in verdict.explanation


@pytest.mark.parametrize("holder", [None, math.nan])
def test_compare_without_a_holder_the_candidate_wins(holder: float | None) -> None:
    verdict = compare(52.123456789, holder, "rmse", "lower")
    assert verdict == Verdict(True, "rmse 52.1235 wins: no current holder has rmse to beat")


@pytest.mark.parametrize("holder", [None, 53.4])
def test_compare_a_candidate_without_the_metric_loses(holder: float | None) -> None:
    assert compare(None, holder, "rmse", "lower") == Verdict(False, 'metric "rmse" was not logged by the run')


def test_compare_a_nan_candidate_loses() -> None:
    assert compare(math.nan, 53.4, "rmse", "lower") == Verdict(False, "rmse of the run is NaN")


def test_compare_shows_full_precision_when_six_digits_look_equal() -> None:
    verdict = compare(0.12345678, 0.12345679, "rmse", "lower")
    assert verdict == Verdict(True, "rmse 0.12345678 < 0.12345679 of the current holder")
