"""`evaplan profiles measure-cpu`: the profile it writes from a measurement, and its refusals. The
measurement itself runs in tests/calibrate/test_end_to_end.py (it needs torch and two processes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from launcher import measure_cpu as mc
from planner import profiles as prof
from planner.errors import EvaplanError

EXAMPLE = prof.bundled_dir() / "hardware" / "cpu.yaml"
MEASURED = {
    "date": "2026-11-30",
    "cpu": "Test CPU",
    "cores": 2,
    "threads_per_rank": 1,
    "ranks": 2,
    "torch": "2.13.0+cpu",
    "gemm_bf16_tflops": {"128": 0.05, "1024": 0.9},
    "gemm_fp32_tflops": {"128": 0.07, "512": 0.13},
    "copy_rw_gbps": 8.5,
    "adamw_params_per_s": 3.0e8,
    "file_write_gbps": 0.4,
    "host_ram_gib": 23.5,
    "disk_tb": 0.27,
    "load_average_1m": 1.0,
    "collectives": {
        "rss_after_init_bytes": 0.25 * 2**30,
        "all_reduce_busbw_gbps": 0.7,
        "all_gather_busbw_gbps": 0.3,
        "all_reduce_8B_us": 240.0,
        "alpha_us": 115.8,
    },
}


def test_the_written_profile_is_the_measurement_with_sources(tmp_path: Path) -> None:
    path = mc.write_profile(MEASURED, EXAMPLE, tmp_path)
    assert path == tmp_path / "hardware" / "cpu.yaml"
    hw = prof.load_hardware("cpu", [tmp_path])
    assert hw.bf16_dense_tflops.value == 0.9  # the best size, as a datasheet peak is the best case
    assert hw.hbm_tbps.value == pytest.approx(0.0085)
    assert hw.host_ram_gib.value == 23.5 and hw.hbm_gib.value == pytest.approx(23.5 / 2)
    assert hw.collective.intra_node_allreduce_gbps.value == 0.7
    assert hw.collective.alpha_intra_us.value == pytest.approx(115.8)
    assert hw.memory_reserved_gib.value == pytest.approx(0.25)
    assert hw.gpus_per_node == 2
    for fig in (hw.bf16_dense_tflops, hw.hbm_tbps, hw.collective.intra_node_allreduce_gbps, hw.host_ram_gib):
        assert fig.source.startswith("measured on this machine by evaplan profiles measure-cpu, 2026-11-30: ")
    # What a CPU cannot measure keeps the bundled example's value and source.
    example = yaml.safe_load(EXAMPLE.read_text())
    assert hw.tdp_w.value == example["tdp_w"]["value"] and hw.tdp_w.source == example["tdp_w"]["source"]


def test_an_impossible_measurement_writes_nothing(tmp_path: Path) -> None:
    bad = {**MEASURED, "copy_rw_gbps": 0.0}
    with pytest.raises(EvaplanError, match="measured cpu profile is invalid"):
        mc.write_profile(bad, EXAMPLE, tmp_path)
    assert not (tmp_path / "hardware").exists()  # validated before anything is created


def test_an_existing_profile_is_kept_without_force(cli, tmp_path: Path) -> None:
    target = tmp_path / "hardware" / "cpu.yaml"
    target.parent.mkdir(parents=True)
    target.write_text("mine\n")
    r = cli("profiles", "measure-cpu", "-o", str(tmp_path))
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        f"error: {target} exists (pass --force to replace it, or -o another folder)"
    ]
    assert target.read_text() == "mine\n"


def test_without_torch_it_says_how_to_get_it(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    r = cli("profiles", "measure-cpu", "-o", str(tmp_path))
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        "error: measure-cpu needs torch (the train extra) (run `make dev`, or pip install 'evaplan[train]')"
    ]
    assert not (tmp_path / "hardware").exists()
