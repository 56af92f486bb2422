"""Formatting of results people compare: tables, CSV, JSON, Markdown, YAML.

Pure functions from plain rows (lists of dicts) to text; commands decide what the rows are. Machine
formats (CSV, JSON, YAML) get raw numbers with the unit in the column name (`cost_usd`, `wall_days`,
`gpu_hours`); tables get human text ("$442k", "10.5 d").
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections.abc import Sequence
from typing import Any, Literal

import yaml

Format = Literal["table", "json", "csv", "markdown", "yaml"]
FORMATS: tuple[str, ...] = ("table", "json", "csv", "markdown", "yaml")


def to_jsonable(obj: Any) -> Any:
    """pydantic models, dates and tuples to plain JSON types."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return obj


def dumps_json(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every key of every row, in first-seen order (rows of different kinds share one header)."""
    seen: dict[str, None] = {}
    for r in rows:
        seen.update(dict.fromkeys(r))
    return list(seen)


def format_rows(rows: Sequence[dict[str, Any]], fmt: str, *, floatfmt: str = ",.4g") -> str:
    """Rows of equal keys as the chosen format; the key order of the first row is the column order."""
    rows = [to_jsonable(r) for r in rows]
    if fmt == "json":
        return dumps_json(rows)
    if fmt == "yaml":
        return yaml.safe_dump(rows, sort_keys=False, allow_unicode=True)
    headers = columns(rows)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=headers, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(r)
        return buf.getvalue()
    table = [[r.get(h) for h in headers] for r in rows]
    if fmt != "markdown":
        # Text that does not read as a number to float() ("91,751" does not): every column left-aligned.
        text = simple_table(headers, table) if _plain_text(table) else simple_table_or_none(headers, table)
        if text is not None:
            return text + "\n"
    # ~0.1 s to import (importlib.metadata for its version, wcwidth): only where it is needed.
    from tabulate import tabulate

    tablefmt = "github" if fmt == "markdown" else "simple"
    return tabulate(table, headers=headers, tablefmt=tablefmt, floatfmt=floatfmt) + "\n"


def _is_number(x: Any) -> bool:
    if isinstance(x, bool) or x is None:
        return False
    try:
        float(x)
    except (TypeError, ValueError):
        return False
    return True


def _plain_text(table: list[list[Any]]) -> bool:
    """Every cell is text that does not read as a number (tabulate would right-align those)."""
    return all((c is None or isinstance(c, str)) and not _is_number(c) for row in table for c in row)


def simple_table(headers: Sequence[str], table: list[list[Any]]) -> str:
    """tabulate's "simple" format for text cells, byte for byte (tests/planner/test_machine_formats.py
    compares them): columns as wide as their widest cell or header + 2, two spaces apart, cells
    stripped, trailing spaces removed. `evaplan estimate` prints it without importing tabulate."""
    cells = [["" if c is None else str(c).strip() for c in row] for row in table]
    return _simple_lines(headers, cells, [False] * len(headers))


def _simple_lines(headers: Sequence[str], cells: list[list[str]], right: list[bool]) -> str:
    widths = [max([len(h) + 2, *(len(row[k]) for row in cells)]) for k, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        ).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)


# tabulate's pattern of a number with thousands separators (tabulate 0.10, _float_with_thousands_separators).
_THOUSANDS = re.compile(r"^(([+-]?[0-9]{1,3})(?:,([0-9]{3}))*)?(?(1)\.[0-9]*|\.[0-9]+)?$")
# East Asian widths that wcwidth counts as one column (tabulate measures cells with it when installed).
_NARROW = frozenset({"Na", "N", "H", "A"})


def simple_table_or_none(headers: Sequence[str], table: list[list[Any]]) -> str | None:
    """tabulate's "simple" format, byte for byte, of a table whose columns are text or integers (the
    plan and compare tables: ranks, GPU counts, "91,751" GPU-hours), without importing tabulate; None
    for anything else (floats, numeric text with a point, booleans, wide or invisible characters,
    several lines in a cell), which tabulate formats. As tabulate: a column is integer when each of
    its cells is an int, text int() reads, or digits grouped by commas, or empty; an integer column
    and its header are right-aligned, unstripped; any other cell makes the column text (left, stripped)."""
    cells: list[list[str]] = [[] for _ in table]
    right: list[bool] = []
    for k in range(len(headers)):
        column = [row[k] for row in table]
        kinds = {_cell_kind(c) for c in column}
        if None in kinds or "number" in kinds:
            return None
        integer = "text" not in kinds and "int" in kinds
        for row_cells, c in zip(cells, column, strict=True):
            v = "" if c is None else str(c)
            if integer and v != v.strip():
                return None  # tabulate keeps the spaces of an integer column's text: not handled here
            row_cells.append(v if integer else v.strip())
        right.append(integer)
    if not all(_narrow(v) for v in (*headers, *(v for row in cells for v in row))):
        return None
    return _simple_lines(headers, cells, right)


def _cell_kind(c: Any) -> str | None:
    """'empty', 'int', 'text' or 'number' (a float, or text tabulate reads as one) as tabulate types
    the cell (its _type); None for a cell not handled here (booleans, other types)."""
    if c is None or c == "":
        return "empty"
    if type(c) is int:
        return "int"
    if not isinstance(c, str) or c in ("True", "False"):
        return None
    try:
        int(c)
    except ValueError:
        if _THOUSANDS.match(c):
            return "int" if "." not in c else "number"
        return "number" if _is_number(c) else "text"
    return "int"


def _narrow(text: str) -> bool:
    """One column per character and one line, as tabulate (wcwidth) measures it: no wide, combining,
    control or format character (a character outside these makes the caller fall back to tabulate)."""
    if text.isascii():
        return text.isprintable()
    return all(
        (ch.isascii() and ch.isprintable())
        or (unicodedata.east_asian_width(ch) in _NARROW and unicodedata.category(ch)[0] not in "MC")
        for ch in text
    )
