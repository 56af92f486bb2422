"""Published inference measurements (profiles/published_serving.yaml, planner/published_serving.py):
the data file, its references to model and hardware profiles, and its loader's errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from planner import profiles as prof
from planner.errors import ProfileError
from planner.published_serving import PublishedMeasurements, data_path, load_measurements

REPO = Path(__file__).resolve().parents[2]
# The GPUs with a hardware profile that a public measurement may name (the CPU profile is the test host).
GPU_PROFILES = {"a100-40gb", "a100-80gb", "h100-sxm", "h200", "b200", "mi300x", "mi325x"}


def _raw() -> dict:
    return yaml.safe_load(data_path().read_text(encoding="utf-8"))


def test_bundled_file_loads_with_several_sources_engines_and_batches():
    rows = load_measurements().measurements
    assert len(rows) >= 25
    assert len({r.source_url for r in rows}) >= 3
    assert {r.stack for r in rows} >= {"eager", "fused"}
    assert min(r.batch for r in rows) == 1 and max(r.batch for r in rows) >= 128


def test_every_row_names_an_existing_model_and_a_profiled_gpu():
    models = set(prof.index("models"))
    for r in load_measurements().measurements:
        assert r.model in models, r.name
        assert r.hardware in GPU_PROFILES, r.name
        prof.load_hardware(r.hardware)


def test_the_model_profile_has_the_measured_encoders_shape():
    """The image tower evaplan predicts has the measured encoder's width, depth and heads, and its
    tokens at the row's resolution differ from the measured ones by at most the class token."""
    for r in load_measurements().measurements:
        v = prof.load_model(r.model).vision
        size = r.image_size or v.image_size
        assert size % v.patch_size == 0, r.name
        tokens = (size // v.patch_size) ** 2 + 1
        assert (v.width, v.depth, v.width // v.head_width) == (
            r.measured.width,
            r.measured.depth,
            r.measured.heads,
        ), r.name
        assert abs(tokens - r.measured.tokens) <= 1, r.name


def test_every_figure_is_in_its_quote_with_a_pinned_source():
    """The published number appears verbatim in the quote, and a web source is pinned to a commit."""
    for r in load_measurements().measurements:
        p = r.published
        figure = p.latency_ms if p.latency_ms is not None else p.images_per_s
        assert f"{figure:g}" in r.quote.replace(",", ""), r.name
        assert f"| {r.batch} |" in r.quote or f"| {r.batch} " in r.quote, r.name
        if r.source_url.startswith("https://github.com/"):
            assert "/blob/" in r.source_url and len(r.source_url.split("/blob/")[1].split("/")[0]) == 40
        assert r.assumptions, r.name


def test_images_per_s_is_batch_over_latency():
    rows = load_measurements().measurements
    lat = next(r for r in rows if r.published.latency_ms is not None)
    assert lat.published_images_per_s == pytest.approx(lat.batch / (lat.published.latency_ms / 1e3))
    ips = next(r for r in rows if r.published.images_per_s is not None)
    assert ips.published_images_per_s == ips.published.images_per_s


def _write(tmp_path: Path, rows: list[dict]) -> str:
    path = tmp_path / "serving.yaml"
    path.write_text(yaml.safe_dump({"measurements": rows}, sort_keys=False))
    return str(path)


def _first() -> dict:
    return _raw()["measurements"][0]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda r: r.update(typo=1), "typo"),
        (lambda r: r.update(precision="fp4"), "precision"),
        (lambda r: r.update(stack="jit"), "stack"),
        (lambda r: r.update(batch=0), "batch"),
        (lambda r: r["published"].update(images_per_s=100.0), "exactly one"),
        (lambda r: r.update(published={}), "exactly one"),
        (lambda r: r["published"].update(latency_ms=-1.0), "latency_ms"),
        (lambda r: r.update(source_url="http://example.com"), "source_url"),
        (lambda r: r.update(source_date="yesterday"), "source_date"),
        (lambda r: r.pop("quote"), "quote"),
    ],
)
def test_a_malformed_row_is_one_line_naming_it(tmp_path, change, words):
    row = _first()
    change(row)
    load_measurements.cache_clear()
    with pytest.raises(ProfileError) as e:
        load_measurements(_write(tmp_path, [row]))
    line = e.value.line()
    assert len(line.splitlines()) == 1
    assert "measurements.0" in line and words in line


def test_duplicate_names_and_an_empty_file_are_refused(tmp_path):
    row = _first()
    with pytest.raises(ProfileError, match="twice"):
        load_measurements(_write(tmp_path, [row, row]))
    with pytest.raises(ValueError):
        PublishedMeasurements.model_validate({"measurements": []})
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ProfileError):
        load_measurements(str(empty))
