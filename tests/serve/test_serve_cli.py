"""`evaplan serve`: table, JSON and CSV agree with planner.serve; bad input is one line and exit 2;
--plot writes a PNG; routing rows."""

from __future__ import annotations

import csv
import io
import json

import pytest

from planner import profiles as prof
from planner.calibration import published_default
from planner.serve import serve_point

THREE = ["serve", "--model", "eva02-clip-b16", "eva02-clip-l14", "eva-clip-18b", "--offering", "aws-p5"]


def _err(result) -> str:
    return (getattr(result, "stderr", None) or result.output).strip()


def test_table_lists_every_model_with_prices_and_accuracy(cli):
    r = cli(*THREE)
    assert r.exit_code == 0, _err(r)
    out = r.stdout
    for name in ("eva02-clip-b16", "eva02-clip-l14", "eva-clip-18b"):
        assert name in out
    for col in ("$/M on-dem", "$/M spot", "$/M commit", "$/M txt", "IN-1K %", "27-avg %", "Pareto"):
        assert col in out
    assert "83.8" in out and "80.7" in out


def test_json_matches_the_planner(cli):
    r = cli(*THREE, "--batch", "64", "--rps", "2000", "--format", "json")
    assert r.exit_code == 0, _err(r)
    doc = json.loads(r.stdout)
    assert [p["model"] for p in doc["points"]] == ["eva02-clip-b16", "eva02-clip-l14", "eva-clip-18b"]
    p = doc["points"][2]
    want = serve_point(
        prof.load_model("eva-clip-18b"),
        # the published-runs compute scale, as estimate applies it (one time model)
        published_default(prof.load_hardware("h100-sxm")),
        prof.load_offering("aws-p5"),
        batch=64,
        rps=2000,
    )
    assert p["images_per_s_per_gpu"] == pytest.approx(want.images_per_s_per_gpu)
    assert p["fleet"]["gpus"] == want.fleet.gpus
    assert p["accuracy_source"].startswith("IN-1K")
    assert p["sources"]["peak"]


def test_csv_has_raw_numbers(cli):
    r = cli(*THREE, "--format", "csv")
    assert r.exit_code == 0, _err(r)
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 3
    assert float(rows[0]["usd_per_m_images_on_demand"]) > 0
    assert float(rows[2]["imagenet_top1"]) == 83.8


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "eva-clip-99b", "--hardware", "h100-sxm"], "no model profile named 'eva-clip-99b'"),
        (
            ["--model", "eva-clip-18b", "--hardware", "h100-sxm", "--batch", "60000"],
            "largest batch that fits is --batch",
        ),
        (["--model", "eva-clip-18b", "--hardware", "h100-sxm", "--p99-ms", "1"], "use --p99-ms"),
        (
            ["--model", "eva-clip-18b", "--hardware", "a100-80gb", "--precision", "fp8"],
            "use --precision bf16",
        ),
        (["--model", "eva-clip-18b", "--hardware", "cpu"], "does not fit even at batch 1"),
        (
            ["--model", "eva-clip-18b", "--route-large-share", "0.1", "--hardware", "h100-sxm"],
            "exactly two models",
        ),
        (["--model", "eva-clip-18b"], "needs --hardware or --offering"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, args, needle, tmp_path):
    plot = tmp_path / "p.png"
    r = cli("serve", *args, "--plot", str(plot))
    assert r.exit_code == 2
    err = _err(r)
    assert needle in err
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert "Traceback" not in r.output
    assert not plot.exists()  # nothing half-written


def test_route_checks_the_seed_speedup(cli):
    r = cli(
        "serve",
        "--model",
        "eva-clip-18b",
        "eva02-clip-b16",
        "--offering",
        "aws-p5",
        "--route-large-share",
        "0.1",
    )
    assert r.exit_code == 0, _err(r)
    assert "eva02-clip-b16 → eva-clip-18b" in r.stdout  # the cheaper one is the small encoder
    assert "share for 7× / 8×" in r.stdout
    r = cli(
        "serve",
        "--model",
        "eva-clip-18b",
        "eva02-clip-b16",
        "--offering",
        "aws-p5",
        "--route-large-share",
        "0.1",
        "--route-mode",
        "split",
        "--format",
        "json",
    )
    route = json.loads(r.stdout)["routes"][0]
    assert route["mode"] == "split" and route["share"] == 0.1
    assert route["speedup_vs_large"] == pytest.approx(route["large_gpu_s"] / route["blended_gpu_s"])


def test_plot_is_a_png(cli, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "cost-vs-accuracy.png"
    r = cli(*THREE, "--hardware", "mi300x", "--plot", str(path))
    assert r.exit_code == 0, _err(r)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 10_000 < len(data) < 2_000_000


def test_serve_prints_the_range_of_its_comparable_inference_measurements(cli):
    from planner import intervals
    from planner.params import count_params

    r = cli(*THREE, "--format", "json")
    assert r.exit_code == 0, _err(r)
    for p in json.loads(r.stdout)["points"]:
        total = count_params(prof.load_model(p["model"])).total
        want = intervals.serving_range(total, p["stack"])
        rg = p["range"]
        assert (rg["time_ratio_low"], rg["time_ratio_high"], rg["comparable_runs"]) == (
            want.low,
            want.high,
            want.runs,
        )
        assert "comparable published inference measurements" in rg["basis"]
    table = cli(*THREE).stdout
    big = intervals.serving_range(count_params(prof.load_model("eva-clip-18b")).total, "eager")
    line = next(x for x in table.splitlines() if "range of eva-clip-18b" in x)
    assert f"× {big.low:.2f}–{big.high:.2f}" in line and f"from {big.runs} comparable" in line
    rows = list(csv.DictReader(io.StringIO(cli(*THREE, "--format", "csv").stdout)))
    for row in rows:
        low, high = float(row["images_per_s_per_gpu_low"]), float(row["images_per_s_per_gpu_high"])
        assert low <= float(row["images_per_s_per_gpu"]) <= high
