"""planner.terms: a term's value is its printed formula evaluated with its printed inputs."""

from __future__ import annotations

import numpy as np
import pytest

from planner.terms import Term, evaluate


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
