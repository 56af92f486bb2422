"""A term: one figure's value, formula, inputs and source, from ONE expression (DESIGN rule 13).

The formula is Python arithmetic over the named inputs; the value is that formula evaluated with
those inputs, so the explanation `evaplan estimate --explain` prints cannot drift from the number.
The evaluation is numpy-friendly: the inputs may be scalars (one plan, `estimate()`) or arrays (one
element per candidate, the vectorised search), and `max`/`min`/`ceil`/`floor`/`sqrt` are numpy's
element-wise functions. A test re-evaluates every printed formula with its printed inputs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, reduce
from types import CodeType
from typing import Any

import numpy as np


def _folded(pairwise: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    """An element-wise function of two arguments folded over any number of them, left to right
    (numpy's maximum takes its third positional argument as the output array)."""

    def fold(first: Any, *rest: Any) -> Any:
        return reduce(pairwise, rest, first) if rest else pairwise(first, first)

    return fold


# The functions a formula may call: element-wise, so one formula serves scalars and arrays.
FUNCTIONS: dict[str, Any] = {
    "max": _folded(np.maximum),
    "min": _folded(np.minimum),
    "ceil": np.ceil,
    "floor": np.floor,
    "sqrt": np.sqrt,
    "where": np.where,
}


@cache
def _compiled(formula: str) -> CodeType:
    return compile(formula, f"<term {formula}>", "eval")


def evaluate(formula: str, inputs: Mapping[str, Any]) -> Any:
    """The formula's value with these inputs (no builtins: arithmetic and FUNCTIONS only)."""
    return eval(_compiled(formula), {"__builtins__": {}, **FUNCTIONS}, dict(inputs))


@dataclass(frozen=True)
class Term:
    """A formula over named inputs, with the public source of its constants; `value` evaluates it."""

    formula: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def value(self) -> Any:
        return evaluate(self.formula, self.inputs)


def identifier(name: str) -> str:
    """A printed name as a formula input: runs of other characters become "_" ("gradient
    reduce-scatter" → gradient_reduce_scatter)."""
    ident = re.sub(r"\W+", "_", name).strip("_")
    return ident if ident.isidentifier() else f"_{ident}"


def sum_term(parts: Mapping[str, Any], source: str = "") -> Term:
    """Σ of the parts, added left to right in their order (floating-point addition is not
    associative, so the scalar estimate and the vectorised search add in this one order)."""
    inputs = {identifier(k): v for k, v in parts.items()}
    if len(inputs) != len(parts):
        raise ValueError(f"two parts share one formula name: {list(parts)}")
    return Term(" + ".join(inputs) or "0.0", inputs, source)


def _same(a: Any, b: Any) -> bool:
    return a is b or bool(np.array_equal(a, b))


def compose(template: str, source: str = "", **parts: Term) -> Term:
    """One term from others: the template names them ("{optimizer} + {wrapper}"), each replaced by
    its parenthesised formula, so the whole evaluates as the parts would; their inputs merge (a name
    two parts share must hold one value)."""
    inputs: dict[str, Any] = {}
    for t in parts.values():
        for k, v in t.inputs.items():
            if k in inputs and not _same(inputs[k], v):
                raise ValueError(f"input {k} differs between the parts of {template!r}")
            inputs[k] = v
    return Term(template.format(**{k: f"({t.formula})" for k, t in parts.items()}), inputs, source)
