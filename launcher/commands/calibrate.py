"""`evaplan calibrate JOB|METRICS.jsonl ...`: fit the planner's efficiency factors from measured runs.

    evaplan calibrate eva-debug-a                       # a job launched by evaplan (its plan and metrics)
    evaplan calibrate out/metrics.jsonl --hardware cpu  # a metrics file; the plan is read from its start record
    evaplan calibrate run-a run-b --reset               # refit from these runs only

Writes calibrations/<hardware>.yaml in the user profiles folder (--profiles-dir, else
$EVAPLAN_PROFILES_DIR, else ~/.config/evaplan/profiles), keeping the runs of an earlier calibration
of that hardware unless --reset; `estimate`, `plan` and `compare` then use it (--no-calibration not).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from launcher.commands._options import format_option, profiles_dirs
from planner import calibration as cb
from planner import profiles as prof
from planner.errors import EvaplanError
from planner.report import dumps_json, format_rows
from planner.spec import HardwareSpec


def _from_job(name: str, dirs: list[str]) -> tuple[cb.Observation, HardwareSpec]:
    from launcher.monitor import read_estimate
    from launcher.state import JobStore

    record = JobStore().get(name)
    est = read_estimate(
        record.estimate,
        f"job '{name}' has no evaplan estimate in its record",
        hint="calibrate from its metrics.jsonl with --hardware instead",
    )
    metrics = record.backend_data.get("metrics_path")
    if not metrics:
        raise EvaplanError(
            f"job '{name}' ran on {record.backend}: its metrics.jsonl is on the job's output volume, not here",
            hint=f"copy it out (kubectl cp) and run `evaplan calibrate METRICS.jsonl --hardware {est.hardware}`",
        )
    run = cb.read_run(metrics)
    hardware = prof.load_hardware(est.hardware, dirs)
    model = prof.load_model(est.model, dirs)
    cb.check_run_matches(run, est, hardware)
    return cb.observe(name, run, model, est.plan, est.training), hardware


def _from_file(path: str, hardware_name: str | None, dirs: list[str]) -> tuple[cb.Observation, HardwareSpec]:
    run = cb.read_run(path)
    name = hardware_name or run.start.get("hardware")
    if not name:
        raise EvaplanError(
            f"metrics file {path} does not name its hardware (the run had no hardware profile)",
            hint="add --hardware NAME",
        )
    if hardware_name and run.start.get("hardware") not in (None, hardware_name):
        raise EvaplanError(
            f"metrics file {path} is from hardware '{run.start['hardware']}', not '{hardware_name}'",
            hint=f"drop --hardware or use --hardware {run.start['hardware']}",
        )
    hardware = prof.load_hardware(name, dirs)
    model = prof.load_model(run.start["model"], dirs)
    plan, training = cb.plan_from_start(run, model, hardware)
    job = run.start.get("job_name") or Path(path).stem
    return cb.observe(str(job), run, model, plan, training), hardware


def _earlier(cal: cb.CalibrationSpec, hardware: HardwareSpec, dirs: list[str]) -> list[cb.Observation]:
    return [cb.observation_from_record(r, prof.load_model(r.model, dirs), hardware) for r in cal.runs]


def report_rows(before: HardwareSpec, cal: cb.CalibrationSpec) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {
            "factor": "compute_scale",
            "profile": f"{before.compute_scale.value:.4g}"
            if before.compute_scale is not None
            else "1 (as modelled)",
            "calibrated": cal.efficiency_text(),
            "how": "multiplier on the modelled device rates that makes the planner's step match the measured median",
        },
        {
            "factor": "memory_reserved_gib",
            "profile": f"{before.memory_reserved_gib.value:.4g}",
            "calibrated": f"{cal.memory_reserved_gib.value:.4g}",
            "how": "measured peak − derived memory terms (max over runs)",
        },
    ]
    for key, per in (("microbatch_overhead_s", "micro-batch"), ("step_overhead_s", "optimizer step")):
        fitted = getattr(cal, key)
        rows.append(
            {
                "factor": key,
                "profile": "derived (planner/ops.py)",
                "calibrated": f"{fitted.value:.4g}" if fitted is not None else "derived (not fitted)",
                "how": f"fixed time per {per}, fitted with the compute scale"
                if fitted is not None
                else "needs runs of more layouts (micro-batch, gradient accumulation)",
            }
        )
    return rows


@click.command("calibrate")
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--hardware",
    "hardware_name",
    default=None,
    help="Hardware profile of a metrics file's run (default: the one its start record names).",
)
@click.option("--reset", is_flag=True, help="Forget the runs of an earlier calibration of this hardware.")
@click.option("--dry-run", is_flag=True, help="Fit and print, but write nothing.")
@format_option("table", "json", "markdown")
@click.pass_context
def command(
    ctx: click.Context,
    sources: tuple[str, ...],
    hardware_name: str | None,
    reset: bool,
    dry_run: bool,
    fmt: str,
) -> None:
    """Fit achieved MFU, fixed step overheads (given runs of ≥ 2 layouts) and runtime memory from the
    trainer's metrics of JOBs (launched by evaplan) or METRICS.jsonl files, and write the hardware's
    calibration profile with the runs it came from.

    Earlier runs of the same hardware's calibration are kept and refitted together (a run with the
    same job name is replaced) unless --reset.
    """
    dirs = profiles_dirs(ctx)
    observations: list[cb.Observation] = []
    hardware: HardwareSpec | None = None
    for src in sources:
        if Path(src).is_file() or src.endswith(".jsonl"):
            obs, hw = _from_file(src, hardware_name, dirs)
        else:
            if hardware_name:
                raise EvaplanError(
                    f"--hardware applies to metrics files; job '{src}' has its plan's hardware",
                    hint="drop --hardware",
                )
            obs, hw = _from_job(src, dirs)
        if hardware is not None and hw.name != hardware.name:
            raise EvaplanError(
                f"runs of two hardware profiles given ({hardware.name}, {hw.name})",
                hint="calibrate one hardware profile at a time",
            )
        if any(o.job == obs.job for o in observations):
            raise EvaplanError(f"run '{obs.job}' given twice", hint="name each run once")
        hardware = hw
        observations.append(obs)
    assert hardware is not None  # click: nargs=-1, required=True
    earlier = None if reset else cb.find_calibration(hardware.name, dirs)
    kept: list[cb.Observation] = []
    if earlier is not None:
        new_jobs = {o.job for o in observations}
        kept = [o for o in _earlier(earlier, hardware, dirs) if o.job not in new_jobs]
    cal = cb.calibrate([*kept, *observations], hardware)
    path = None if dry_run else cb.save(cal, dirs)
    if fmt == "json":
        click.echo(dumps_json({"written": str(path) if path else None, "calibration": cal}), nl=False)
        return
    where = f"wrote {path}" if path else "dry run: nothing written"
    click.echo(
        f"{where}: {cal.describe()}" + (f" ({len(kept)} kept from the earlier calibration)" if kept else "")
    )
    click.echo(format_rows(report_rows(hardware, cal), fmt), nl=False)
    click.echo("\npredicted vs measured step time and memory per GPU, by run")
    click.echo(format_rows(cb.comparison_rows(cal), fmt), nl=False)
    for r in cal.runs:
        if r.comm_logged_bytes_measured is not None and r.comm_logged_bytes_predicted:
            ratio = r.comm_logged_bytes_measured / r.comm_logged_bytes_predicted
            click.echo(
                f"comm volume of {r.job} (DeepSpeed comms logger): {r.comm_logged_bytes_measured:,.0f} B/step "
                f"measured vs {r.comm_logged_bytes_predicted:,.0f} B predicted ({ratio:.2f}×)"
            )
