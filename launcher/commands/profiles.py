"""`evaplan profiles list | show | validate | measure-cpu`: what the planner knows, whether a file is
valid, and a `cpu` profile measured on this machine."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from launcher.commands._options import format_option, profiles_dirs
from planner import profiles as prof
from planner.report import FORMATS, dumps_json, format_rows, to_jsonable


@click.group("profiles")
def command() -> None:
    """List, show and validate model, hardware and offering profiles."""


def _summary(kind: str, obj) -> dict:
    if kind == "models":
        return {
            "vision": f"{obj.vision.width}w/{obj.vision.depth}L/{obj.vision.heads}h {obj.vision.mlp}",
            "text": f"{obj.text.width}w/{obj.text.layers}L/{obj.text.heads}h",
            "image": f"{obj.recipe.image_size}/{obj.vision.patch_size}",
        }
    if kind == "hardware":
        return {
            "hbm_gib": obj.hbm_gib.value,
            "bf16_tflops": obj.bf16_dense_tflops.value,
            "gpus_per_node": obj.gpus_per_node,
        }
    if kind == "calibrations":
        return {"hardware": obj.hardware, "efficiency": obj.efficiency_text(), "runs": len(obj.runs)}

    def usd(field: str) -> float | None:
        v = getattr(obj, field)
        return v.value if v is not None else None

    return {
        "hardware": obj.hardware,
        "pricing": obj.kind,
        "on_demand_usd_per_node_hour": usd("on_demand_usd_per_node_hour"),
        "spot_usd_per_node_hour": usd("spot_usd_per_node_hour"),
        "committed_usd_per_node_hour": usd("committed_usd_per_node_hour"),
        "committed_term": obj.committed_term,
    }


_TABLE_NAMES = {
    "on_demand_usd_per_node_hour": "on-demand $/node-h",
    "spot_usd_per_node_hour": "spot $/node-h",
    "committed_usd_per_node_hour": "committed $/node-h",
    "committed_term": "term",
}


def _human(row: dict) -> dict:
    """A machine row as a table row: short headers, 'none' where an offering publishes no price."""
    out = {}
    for k, v in row.items():
        if k == "kind":
            continue
        if k == "committed_term":
            v = v or "-"
        elif k in _TABLE_NAMES and row.get("pricing") == "cloud":
            v = "none published" if v is None else f"{v:,.2f}"
        out[_TABLE_NAMES.get(k, k)] = v
    return out


@command.command("list")
@click.option(
    "--kind",
    "kinds",
    type=click.Choice(list(prof.KINDS)),
    multiple=True,
    help="Only these kinds (default: all).",
)
@format_option(*FORMATS)
@click.pass_context
def list_(ctx: click.Context, kinds: tuple[str, ...], fmt: str) -> None:
    """Every profile by kind and name, with where it comes from."""
    rows = []
    for kind in kinds or tuple(prof.KINDS):
        for name, ref in prof.index(kind, profiles_dirs(ctx)).items():
            obj = (
                prof.load_file(ref.path, kind)
                if kind != "offerings"
                else prof.load_offering(name, profiles_dirs(ctx))
            )
            rows.append(
                {
                    "kind": kind,
                    "name": name,
                    "display_name": obj.display_name,
                    "origin": "bundled" if ref.bundled else str(ref.path.parent.parent),
                    **_summary(kind, obj),
                }
            )
    if fmt == "table":
        # Kinds have different summary columns; print one table per kind.
        for kind in kinds or tuple(prof.KINDS):
            sub = [r for r in rows if r["kind"] == kind]
            if sub:
                click.echo(f"{kind} ({len(sub)})")
                click.echo(format_rows([_human(r) for r in sub], "table"))
        return
    click.echo(format_rows(rows, fmt), nl=False)


@command.command("show")
@click.argument("name")
@click.option(
    "--kind",
    type=click.Choice(list(prof.KINDS)),
    default=None,
    help="Needed only when the name exists in more than one kind.",
)
@format_option("yaml", "json", default="yaml")
@click.pass_context
def show(ctx: click.Context, name: str, kind: str | None, fmt: str) -> None:
    """One profile, fully resolved, with every source."""
    dirs = profiles_dirs(ctx)
    # A calibration is named after its hardware: `show NAME` means the hardware unless --kind calibrations.
    kinds = [kind] if kind else [k for k in prof.KINDS if k != "calibrations" and name in prof.index(k, dirs)]
    if not kinds:
        all_names = sorted({n for k in prof.KINDS for n in prof.index(k, dirs)})
        raise prof.ProfileError(
            f"no profile named '{name}'", hint="`evaplan profiles list` shows " + f"{len(all_names)} names"
        )
    if len(kinds) > 1:
        raise prof.ProfileError(f"'{name}' is a {' and a '.join(kinds)} profile", hint="add --kind")
    k = kinds[0]
    loader = {
        "models": prof.load_model,
        "hardware": prof.load_hardware,
        "offerings": prof.load_offering,
        "calibrations": prof.load_calibration,
    }[k]
    obj = loader(name, dirs)
    data = to_jsonable(obj)
    click.echo(
        dumps_json(data) if fmt == "json" else yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
        nl=False,
    )


@command.command("validate")
@click.argument("paths", nargs=-1, type=click.Path())
@format_option("table", "json", "yaml")
@click.pass_context
def validate(ctx: click.Context, paths: tuple[str, ...], fmt: str) -> None:
    """Validate profile files or folders (default: the bundled and user profiles)."""
    if paths:
        checked = prof.validate_paths(paths)
    else:
        checked = []
        for d in prof.search_dirs(profiles_dirs(ctx)):
            if any((d / k).is_dir() for k in prof.KINDS):
                checked += prof.validate_paths([d / k for k in prof.KINDS if (d / k).is_dir()])
    rows = [
        {"file": str(p), "kind": type(o).__name__, "name": getattr(o, "name", ""), "status": "ok"}
        for p, o in checked
    ]
    click.echo(format_rows(rows, fmt), nl=False)


@command.command("measure-cpu")
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="User profiles folder to write hardware/cpu.yaml into "
    "(default: the first --profiles-dir, else $EVAPLAN_PROFILES_DIR, else ~/.config/evaplan/profiles).",
)
@click.option(
    "--ranks", type=click.IntRange(2, 64), default=2, show_default=True, help="Local ranks (gpus_per_node)."
)
@click.option(
    "--repeat", type=click.IntRange(1, 100), default=5, show_default=True, help="Timed repeats per figure."
)
@click.option("--force", is_flag=True, help="Replace an existing hardware/cpu.yaml in that folder.")
@click.pass_context
def measure_cpu(ctx: click.Context, out_dir: Path | None, ranks: int, repeat: int, force: bool) -> None:
    """Measure this machine (GEMM bf16/fp32, memory copy, gloo all-reduce, cores) and write it as the
    `cpu` hardware profile in a user profiles folder, for `launch --backend local` and `calibrate`.

    Needs torch and deepspeed (the `train` extra). Takes under a minute on a 2-core machine."""
    from planner.calibration import user_profiles_dir

    target_dir = out_dir if out_dir is not None else user_profiles_dir(profiles_dirs(ctx))
    target = target_dir / "hardware" / "cpu.yaml"
    if target.exists() and not force:
        raise prof.ProfileError(f"{target} exists", hint="pass --force to replace it, or -o another folder")
    import importlib.util

    missing = [m for m in ("torch", "deepspeed") if importlib.util.find_spec(m) is None]
    if missing:
        raise prof.ProfileError(
            f"measure-cpu needs {' and '.join(missing)} (the train extra)",
            hint="run `make dev`, or pip install 'evaplan[train]'",
        )
    from launcher import measure_cpu as mc

    click.echo(
        f"measuring this machine ({ranks} ranks, {repeat} repeats per figure; under a minute)...", err=True
    )
    m = mc.measure(ranks=ranks, repeat=repeat)
    path = mc.write_profile(m, prof.bundled_dir() / "hardware" / "cpu.yaml", target_dir)
    c = m["collectives"]
    click.echo(
        f"wrote {path}: {m['cpu']}, {m['cores']} cores; bf16 GEMM "
        f"{max(m['gemm_bf16_tflops'].values()):.4g} TFLOP/s, fp32 {max(m['gemm_fp32_tflops'].values()):.4g} "
        f"TFLOP/s per rank; copy {m['copy_rw_gbps']:.3g} GB/s; gloo all-reduce {c['all_reduce_busbw_gbps']:.3g} GB/s"
    )
    read = [p.resolve() for p in prof.search_dirs(profiles_dirs(ctx))]
    if target_dir.resolve() not in read:
        click.echo(
            f"evaplan reads it when that folder is named: --profiles-dir {target_dir} or EVAPLAN_PROFILES_DIR={target_dir}"
        )
