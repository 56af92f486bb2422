"""profiles/published_ratios.yaml: published same-software GPU-to-GPU ratios, their arithmetic and the
loader that refuses a file whose figures and stated ratios disagree (planner/published_ratios.py)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from planner.errors import ProfileError
from planner.published_ratios import PublishedRatios, load_ratios

REPO = Path(__file__).resolve().parents[2]


def _raw() -> dict:
    return yaml.safe_load((REPO / "profiles" / "published_ratios.yaml").read_text(encoding="utf-8"))


def _write(tmp_path: Path, doc: dict) -> str:
    p = tmp_path / "ratios.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return str(p)


def test_bundled_ratios_cover_the_pairs_the_issue_names():
    pairs = {(r.numerator, r.denominator) for r in load_ratios().ratios}
    for pair in (
        ("h100-sxm", "a100-80gb"),
        ("h200", "h100-sxm"),
        ("b200", "h100-sxm"),
        ("mi325x", "mi300x"),
    ):
        assert pair in pairs


def test_every_row_has_a_source_a_quote_and_a_past_date():
    for r in load_ratios().ratios:
        assert r.source_url.startswith("https://") and len(r.quote) > 20, r.name
        assert date(2020, 1, 1) < r.source_date < date.today(), r.name
        assert r.ratio_low <= r.ratio <= r.ratio_high, r.name


def test_the_written_arithmetic_shows_every_figures_ratio():
    # Each figure's ratio, recomputed from its two published numbers, appears in the row's arithmetic
    # to three decimals: the derivation a reader checks is the one the loader checks.
    for r in load_ratios().ratios:
        for x in r.figure_ratios():
            assert f"{x:.3f}" in r.arithmetic, (r.name, x)
        low, _mid, high = r.computed_range()
        assert f"{low:.3f}–{high:.3f}" in r.arithmetic.replace("\n", " "), r.name


def test_a_time_figure_inverts_and_a_throughput_figure_does_not():
    row = next(r for r in load_ratios().ratios if r.name == "mlperf-mi325x-vs-mi300x-amd")
    minutes, throughput = row.figures[0], row.figures[1]
    assert minutes.ratio(row.unit) == pytest.approx(29.20 / 22.04)
    assert throughput.unit == "samples_per_s" and throughput.ratio(row.unit) == pytest.approx(2.73 / 2.02)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.update(ratio_high=1.9), "ratio_high 1.9 is not what its figures give"),
        (lambda r: r.update(ratio=1.0), "ratio 1.0 is not what its figures give"),
        (lambda r: r["figures"][0].update(numerator=2000), "is not what its figures give"),
        (lambda r: r.update(typo=1), "ratios.0.typo: Extra inputs"),
        (lambda r: r.update(denominator=r["numerator"]), "numerator and denominator are both"),
        (lambda r: r.update(figures=r["figures"][:1]), "needs the source's stated_spread"),
        (lambda r: r.update(source_url="http://example.com"), "source_url"),
    ],
)
def test_a_bad_row_is_refused_in_one_line(tmp_path, edit, message):
    doc = _raw()
    edit(doc["ratios"][0])
    with pytest.raises(ProfileError) as e:
        load_ratios(_write(tmp_path, doc))
    text = str(e.value)
    assert message in text and "\n" not in text


def test_one_figure_with_a_stated_spread_gives_its_range():
    row = _raw()["ratios"][0]
    row["figures"] = [{"label": "one", "numerator": 3.0, "denominator": 2.0}]
    row.update(stated_spread=0.1, ratio=1.5, ratio_low=1.35, ratio_high=1.65)
    r = PublishedRatios.model_validate({"ratios": [row]}).ratios[0]
    assert r.computed_range() == pytest.approx((1.35, 1.5, 1.65))


def test_unknown_profiles_and_duplicate_names_are_refused(tmp_path):
    doc = _raw()
    doc["ratios"][0]["numerator"] = "h900"
    with pytest.raises(ProfileError, match="no hardware profile h900"):
        load_ratios(_write(tmp_path, doc))
    doc = _raw()
    doc["ratios"][0]["clip_layout"]["model"] = "vit-nope"
    with pytest.raises(ProfileError, match="no model profile vit-nope"):
        load_ratios(_write(tmp_path, doc))
    doc = _raw()
    doc["ratios"].append(doc["ratios"][0])
    with pytest.raises(ProfileError, match="appears twice"):
        load_ratios(_write(tmp_path, doc))


# ------------------------------------------------------------------------- the model's ratios (validate)
@pytest.fixture(scope="module")
def ratio_checks():
    from planner import intervals, validation

    return validation.check_ratios(intervals.published_compute_scale())


def test_the_model_ratio_is_the_layout_predicted_on_each_gpu(ratio_checks):
    from planner import intervals, validation
    from planner.gpu_ratios import layout_run

    scale = intervals.published_compute_scale()
    for c in ratio_checks:
        num, den = (
            validation.check_run(layout_run(c.row, hw), "ratio", scale).estimate.compute.samples_per_s
            for hw in (c.row.numerator, c.row.denominator)
        )
        assert c.model_ratio == pytest.approx(num / den), c.row.name
        assert c.inside == (c.row.ratio_low <= c.model_ratio <= c.row.ratio_high)
        assert (c.log_error == 0) == c.inside
        assert c.reach >= abs(c.log_error)


def test_compare_uncertainty_is_the_farthest_published_figure(ratio_checks):
    import math

    from planner import intervals
    from planner.gpu_ratios import ratio_uncertainty

    u = ratio_uncertainty(ratio_checks)
    assert u == max(
        max(abs(math.log(c.model_ratio / c.row.ratio_low)), abs(math.log(c.model_ratio / c.row.ratio_high)))
        for c in ratio_checks
    )
    assert intervals.gpu_ratio_uncertainty() == pytest.approx(u, abs=1e-6)  # the cache holds today's


def test_validate_prints_the_gpu_ratio_table(cli, ratio_checks):
    import csv
    import io
    import json

    out = cli("validate").output
    for c in ratio_checks:
        line = next(x for x in out.splitlines() if x.startswith(c.row.name))
        assert f"{c.model_ratio:.2f}×" in line and ("yes" in line) == c.inside
    inside = sum(c.inside for c in ratio_checks)
    assert f"GPU ratios inside their published ranges: {inside} of {len(ratio_checks)}" in out
    doc = json.loads(cli("validate", "--format", "json").output)
    assert [r["ratio"] for r in doc["gpu_ratios"]] == [c.row.name for c in ratio_checks]
    assert doc["summary"]["gpu_ratios"]["inside"] == inside
    rows = list(csv.DictReader(io.StringIO(cli("validate", "--gpu-ratios", "--format", "csv").output)))
    assert len(rows) == len(ratio_checks) and {"model_ratio", "inside", "reach"} <= set(rows[0])


def test_validate_with_a_bad_ratios_file_is_one_line_and_exit_2(cli, tmp_path):
    doc = _raw()
    doc["ratios"][0]["ratio_high"] = 9.0
    r = cli("validate", "--gpu-ratios", "--ratios", _write(tmp_path, doc))
    assert r.exit_code == 2
    err = (getattr(r, "stderr", None) or r.output).strip()
    assert len(err.splitlines()) == 1 and "ratio_high 9.0 is not what its figures give" in err
