"""planner.terms: a term's value is its printed formula evaluated with its printed inputs."""

from __future__ import annotations

import numpy as np
import pytest

from planner.terms import Term, compose, evaluate


def test_value_is_the_formula_evaluated() -> None:
    t = Term(
        "node_hours * usd_per_node_hour + storage_usd",
        {"node_hours": 10.0, "usd_per_node_hour": 3.5, "storage_usd": 2.0},
    )
    assert t.value == 37.0


def test_same_formula_on_arrays_elementwise() -> None:
    t = Term("max(a + b, c)", {"a": np.array([1.0, 5.0]), "b": 1.0, "c": np.array([3.0, 3.0])})
    assert t.value.tolist() == [3.0, 6.0]


def test_unknown_name_is_an_error_not_a_silent_zero() -> None:
    with pytest.raises(NameError):
        evaluate("a + b", {"a": 1.0})


def test_no_builtins_reachable() -> None:
    with pytest.raises(NameError):
        evaluate("open('x')", {})


def test_max_and_min_take_any_number_of_arguments() -> None:
    """numpy's maximum would take a third argument as its output array."""
    t = Term("max(a, b, c) - min(a, b, c)", {"a": np.array([1.0, 9.0]), "b": 4.0, "c": np.array([2.0, 3.0])})
    assert t.value.tolist() == [3.0, 6.0]
    assert evaluate("max(a)", {"a": 2.0}) == 2.0


def test_compose_evaluates_as_its_parts_and_keeps_one_value_per_input() -> None:
    a = Term("x * y", {"x": 3.0, "y": 2.0})
    b = Term("x + z", {"x": 3.0, "z": 1.0})
    both = compose("{a} - {b}", a=a, b=b)
    assert both.formula == "(x * y) - (x + z)"
    assert both.value == a.value - b.value == 2.0
    with pytest.raises(ValueError, match="input x differs"):
        compose("{a} + {c}", a=a, c=Term("x", {"x": 4.0}))
