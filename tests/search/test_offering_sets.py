"""Name a set, not a list (issue 23): `--offering all`, shell-style patterns and the --vendor, --gpu,
--provider and --pricing filters on `plan`, `compare` and `serve`; the best offering named, the
runners-up shown; a progress line only on a terminal."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from launcher.commands.plan import Progress
from planner import profiles as prof
from planner.catalog import OfferingFilter, select_offerings
from planner.errors import EvaplanError

ALL = sorted(prof.index("offerings"))
PLAN = ["plan", "--model", "eva02-clip-b16", "--max-nodes", "4", "--deadline", "30d"]


def _options(doc: dict) -> set[str]:
    return {doc["chosen"]["option"], *(r["option"] for r in doc.get("runners_up", []))}


def test_select_offerings_sets_patterns_and_filters() -> None:
    assert select_offerings(["all"]) == ALL
    assert select_offerings(["aws-*"]) == [n for n in ALL if n.startswith("aws-")]
    assert select_offerings(["*-mi300x", "crusoe-mi300x", "aws-p5"]) == [
        "crusoe-mi300x",
        "oci-bm-gpu-mi300x",
        "tensorwave-mi300x",
        "aws-p5",
    ]
    amd = select_offerings([], flt=OfferingFilter(vendor="amd"))
    assert amd and all(prof.load_offering(n).hardware.startswith("mi3") for n in amd)
    assert select_offerings(["all"], flt=OfferingFilter(gpu="h100*", pricing="spot")) == ["aws-p5"]
    assert select_offerings(["all"], flt=OfferingFilter(provider="tensorwave")) == [
        "tensorwave-mi300x",
        "tensorwave-mi325x",
    ]


def test_select_offerings_reads_user_profiles(user_profiles: Path) -> None:
    (user_profiles / "offerings" / "ours-h100.yaml").write_text("extends: aws-p5\n")
    assert select_offerings(["ours-*"], [str(user_profiles)]) == ["ours-h100"]


@pytest.mark.parametrize(
    ("names", "flt", "needle"),
    [
        (["nope-*"], OfferingFilter(), "no offering matches 'nope-*'"),
        (["aws-*"], OfferingFilter(vendor="amd"), "no offering matching 'aws-*' passes --vendor amd"),
    ],
)
def test_an_empty_set_is_one_clear_error(names, flt, needle) -> None:
    with pytest.raises(EvaplanError) as e:
        select_offerings(names, flt=flt)
    assert needle in e.value.line()


def test_plan_all_is_every_offering_typed_out(cli) -> None:
    every = cli(*PLAN, "--offering", *ALL, "--format", "json")
    alias = cli(*PLAN, "--offering", "all", "--format", "json")
    assert every.exit_code == 0, every.output
    assert alias.stdout == every.stdout
    doc = json.loads(alias.stdout)
    assert _options(doc) == set(ALL)  # the best named, every other offering a runner-up
    costs = [r["cost_usd"] for r in doc["runners_up"]]
    assert costs == sorted(costs) and doc["chosen"]["cost_usd"] <= costs[0]


def test_plan_table_names_the_runners_up(cli) -> None:
    r = cli(*PLAN, "--offering", "*-mi300x")
    assert r.exit_code == 0, r.output
    assert "runners-up: the best plan of each other option" in r.stdout
    for name in ("crusoe-mi300x", "oci-bm-gpu-mi300x", "tensorwave-mi300x"):
        assert name in r.stdout


def test_filters_alone_mean_every_offering(cli) -> None:
    r = cli(*PLAN, "--vendor", "amd", "--format", "json")
    assert r.exit_code == 0, r.output
    want = {n for n in ALL if prof.load_offering(n).hardware.startswith("mi3")}
    assert _options(json.loads(r.stdout)) == want
    r = cli(*PLAN, "--offering", "all", "--gpu", "h100-sxm", "--pricing", "spot", "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["chosen"]["option"] == "aws-p5" and doc["chosen"]["pricing"] == "spot"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--offering", "aws-p5", "--vendor", "amd"], "--vendor amd narrows a set of offerings"),
        (
            ["--offering", "azure-*", "--pricing", "spot"],
            "no offering matching 'azure-*' passes --pricing spot",
        ),
        (["--offering", "gpu-*"], "no offering matches 'gpu-*'"),
    ],
)
def test_bad_sets_exit_2_with_one_line(cli, args, needle) -> None:
    r = cli(*PLAN, *args)
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr


def test_compare_and_serve_take_sets(cli) -> None:
    r = cli(
        "compare", "--model", "eva02-clip-b16", "--max-nodes", "4", "--offering", "tensorwave-*", "aws-p5"
    )
    assert r.exit_code == 0, r.output
    assert "best for cost: " in r.stdout
    for name in ("tensorwave-mi300x", "tensorwave-mi325x", "aws-p5"):
        assert name in r.stdout
    r = cli("serve", "--model", "eva02-clip-b16", "--offering", "all", "--vendor", "amd")
    assert r.exit_code == 0, r.output
    assert "cheapest per million images for eva02-clip-b16: " in r.stdout
    assert "aws-p5" not in r.stdout and "tensorwave-mi325x" in r.stdout


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_after_a_second_on_a_terminal_only() -> None:
    now = [0.0]
    term = _Terminal()
    p = Progress(term, after_s=1.0, clock=lambda: now[0])
    p(1, 16)
    assert term.getvalue() == ""  # quick searches print nothing
    now[0] = 1.5
    p(9, 16)
    assert term.getvalue() == "\rsearching: 9/16 options, 1.5 s"
    p.close()
    assert term.getvalue().endswith("\r\033[K")
    piped = io.StringIO()  # a pipe or a file: never
    p = Progress(piped, after_s=0.0, clock=lambda: now[0])
    p(9, 16)
    p.close()
    assert piped.getvalue() == ""


def test_no_progress_in_machine_output(cli) -> None:
    r = cli(*PLAN, "--offering", "all", "--format", "csv")
    assert r.exit_code == 0 and r.stderr == ""
