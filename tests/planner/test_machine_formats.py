"""CSV and JSON carry raw numbers with units in the column names; tables stay human. compare puts
on-demand, spot and committed (with its term) side by side and compares every option on one GPU count."""

from __future__ import annotations

import csv
import io
import json

Q18 = ["--model", "eva-clip-18b", "--max-nodes", "40"]


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _no_human_text(rows: list[dict[str, str]], skip: tuple[str, ...] = ()) -> None:
    for r in rows:
        for k, v in r.items():
            if k in skip:
                continue
            assert "$" not in v and not v.endswith((" d", " h", " GiB", " MWh")), (k, v)


def test_estimate_csv_is_raw_numbers_with_units():
    from click.testing import CliRunner

    from launcher.cli import main

    r = CliRunner().invoke(
        main,
        [
            "estimate",
            "--model",
            "eva-clip-18b",
            "--hardware",
            "h100-sxm",
            "--gpus",
            "256",
            "--offering",
            "aws-p5",
            "--format",
            "csv",
        ],
    )
    assert r.exit_code == 0, r.output
    rows = {row["figure"]: row for row in _csv(r.output)}
    usd = float(rows["cost.on_demand_usd"]["value"])
    assert rows["cost.on_demand_usd"]["unit"] == "USD" and usd > 1000
    assert float(rows["wall.on_demand_days"]["value"]) > 1
    assert rows["plan.gpus"]["value"] == "256"
    _no_human_text([v for k, v in rows.items() if not k.startswith(("verdict", "chosen"))], skip=("source",))


def test_compare_side_by_side_prices_same_gpus_and_raw_csv(cli):
    opts = ["--offering", "aws-p5", "tensorwave-mi300x"]
    r = cli("compare", *Q18, *opts)
    assert r.exit_code == 0, r.output
    assert "none published" in r.output and "(3-yr)" in r.output
    assert "for every option" in r.output
    doc = json.loads(cli("compare", *Q18, *opts, "--format", "json").output)
    gpus = {o["plan"]["gpus"] for o in doc["options"]}
    assert len(gpus) == 1 and doc["gpus"]["common"] in gpus
    p5, tw = doc["options"]
    assert p5["committed_term"] == "3-yr" and p5["spot_usd"] < p5["on_demand_usd"]
    assert tw["spot_usd"] is None and tw["committed_usd"] is None
    assert p5["on_demand_usd"] == p5["plan"]["cost_usd"]
    rows = _csv(cli("compare", *Q18, *opts, "--format", "csv").output)
    assert float(rows[0]["cost_usd"]) > 1000 and float(rows[0]["wall_days"]) > 1
    assert rows[1]["spot_usd"] == "" and rows[0]["committed_term"] == "3-yr"
    _no_human_text(rows)
    own = json.loads(cli("compare", *Q18, *opts, "--own-gpus", "--format", "json").output)
    assert own["gpus"]["common"] is None and "per sample" in own["gpus"]["how"]


def test_plan_csv_is_raw(cli):
    r = cli(
        "plan", "--model", "eva02-clip-b16", "--offering", "aws-p5", "--max-nodes", "4", "--format", "csv"
    )
    assert r.exit_code == 0, r.output
    rows = _csv(r.output)
    assert rows and float(rows[0]["cost_usd"]) > 0 and float(rows[0]["gpu_hours"]) > 0
    _no_human_text(rows)


def test_profiles_list_csv_keeps_prices(cli):
    rows = _csv(cli("profiles", "list", "--kind", "offerings", "--format", "csv").output)
    p5 = next(r for r in rows if r["name"] == "aws-p5")
    assert float(p5["on_demand_usd_per_node_hour"]) > 0 and float(p5["spot_usd_per_node_hour"]) > 0
    assert p5["committed_term"] == "3-yr"
    allkinds = _csv(cli("profiles", "list", "--format", "csv").output)
    assert {"hbm_gib", "on_demand_usd_per_node_hour"} <= set(allkinds[0])


def test_simple_table_matches_tabulate():
    tabulate = __import__("tabulate").tabulate
    from launcher.commands.estimate import summary_rows
    from planner import profiles as prof
    from planner.choose import Request, choose
    from planner.report import columns, simple_table

    e = choose(
        prof.load_model("eva-clip-18b"),
        prof.load_hardware("h100-sxm"),
        Request(gpus=256),
        prof.load_offering("aws-p5"),
    )
    rows = summary_rows(e)
    headers = columns(rows)
    table = [[r.get(h) for h in headers] for r in rows]
    table.append(["x", "  padded  ", None])
    assert simple_table(headers, table) == tabulate(table, headers=headers, tablefmt="simple")


def test_integer_columns_match_tabulate_without_it():
    """Tables of text and integer columns (plan's ranks, compare's GPU counts, "91,751" GPU-hours) are
    tabulate's "simple" format to the byte without importing it; anything else goes to tabulate."""
    tabulate = __import__("tabulate").tabulate
    from planner.report import format_rows, simple_table_or_none

    headers = ["rank", "option", "GPU-hours", "GPUs", "note"]
    tables = [
        [[1, "aws-p5 (on-demand)", "91,751", "18×8", None], [10, "b", "1,091,751", "250×8", "x"]],
        [[-3, "  padded  ", "157,238", 7, "—"], [None, "c", "", "12", "≥ 2 – 3"]],
        [[2, "1.5 d", "12", "", "a"], [3, "$631k", "9", "", "b"]],  # an all-empty column
        [[1, "x", "1,234", "mixed", 5], [2, "y", "5", "text", 6]],  # text and ints: a text column
    ]
    for table in tables:
        want = tabulate(table, headers=headers, tablefmt="simple", floatfmt=",.4g")
        assert simple_table_or_none(headers, table) == want
        rows = [dict(zip(headers, r, strict=True)) for r in table]
        assert format_rows(rows, "table") == want + "\n"
    for odd in (1.5, "2.5", "1,234.5", True, "True", "1e3", " 12", "中文", "a\nb", "e\u0301", "\x1b[1m"):
        table = [[1, odd], [2, 3]]  # a float, numeric text, a boolean, wide, multi-line or invisible
        got = simple_table_or_none(["a", "b"], table)
        assert got is None or got == tabulate(table, headers=["a", "b"], tablefmt="simple"), repr(odd)
    assert simple_table_or_none(["a"], [[1.5]]) is None and simple_table_or_none(["a"], [["中文"]]) is None
