"""Formatting of results people compare: tables, CSV, JSON, Markdown, YAML.

Pure functions from plain rows (lists of dicts) to text; commands decide what the rows are. Machine
formats (CSV, JSON, YAML) get raw numbers with the unit in the column name (`cost_usd`, `wall_days`,
`gpu_hours`); tables get human text ("$442k", "10.5 d").
"""

from __future__ import annotations

import csv
import io
import json
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
    if fmt != "markdown" and _plain_text(table):
        return simple_table(headers, table) + "\n"
    from tabulate import tabulate  # 0.08 s to import: only where numbers need its alignment

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
    widths = [max([len(h) + 2, *(len(row[k]) for row in cells)]) for k, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)
