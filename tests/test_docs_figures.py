"""Figures that the prose of README.md and docs/*.md quotes by hand are what the code computes today.

The example outputs between `<!-- evaplan-output -->` comments are rewritten by docs/regen.py and
checked by tests/test_docs_in_sync.py; a figure quoted in a sentence around them is not. Each case
below recomputes one quoted passage from the code (the planner, the published runs and measurements,
the interval cache) and asserts the doc says it, rounded as quoted: a model or data change that moves
a figure fails here, naming the file and the quote to write. Fix a failure by putting today's figure
in the prose (or by replacing the sentence with a generated block).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pytest
from click.testing import CliRunner

from launcher.cli import main as evaplan_cli
from planner import data_pipeline, intervals, memory, ops, params
from planner import serving_validation as sv
from planner import validation as v
from planner.profiles import load_hardware, load_model
from planner.published import load_runs

REPO = Path(__file__).resolve().parents[1]


def doc_text(name: str) -> str:
    """The doc with every run of whitespace as one space (quotes may wrap anywhere)."""
    return " ".join((REPO / name).read_text(encoding="utf-8").split())


def off_range(log_error: float) -> str:
    """How far outside its range a ratio is, as a percentage (`validate`'s "+5% off the range")."""
    return f"{abs(math.exp(log_error) - 1):.0%}"


def block(doc: str, cmd: str) -> str:
    """The output a doc's generated block shows for `cmd` (docs/regen.py keeps it what `cmd` prints,
    tests/test_docs_in_sync.py checks that): prose that quotes a block is checked against it."""
    text = (REPO / doc).read_text(encoding="utf-8")
    m = re.search(
        r"<!-- evaplan-output: " + re.escape(cmd) + r" -->\n(?P<body>.*?)<!-- /evaplan-output -->", text, re.S
    )
    assert m, f"{doc} has no block for `{cmd}`"
    return m.group("body")


def field(output: str, section: str, key: str) -> str:
    """The value of an `estimate` report line `<section>  <key>  <value>`."""
    m = re.search(rf"^{re.escape(section)}\s+{re.escape(key)}\s+(.+)$", output, re.M)
    assert m, f"no `{section} {key}` line"
    return m.group(1)


def first_number(value: str) -> float:
    return float(re.search(r"[0-9][0-9,]*\.?[0-9]*", value).group(0).replace(",", ""))


def serve_column(output: str, column: str) -> dict[str, str]:
    """model → one column of a `serve` table (columns are separated by two or more spaces)."""
    lines = output.removeprefix("```text\n").splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    rows = {}
    for line in lines[2:]:
        if not line or line.startswith(" "):
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells[header.index(column)]
    return rows


def evaplan(*args: str) -> str:
    """What `evaplan ARGS` prints, run in this process (the docs' commands, for a figure no block shows)."""
    r = CliRunner().invoke(evaplan_cli, list(args))
    assert r.exit_code == 0, r.output
    return r.output


class Facts:
    """What `evaplan validate` computes, each part computed once for all cases."""

    @cached_property
    def checks(self) -> list[v.RunCheck]:
        return v.check_all()

    @cached_property
    def summary(self) -> v.Summary:
        return v.summarize(self.checks)

    @cached_property
    def raw_time_ratio(self) -> float:
        raw = v.check_all(compute_scale=None)
        return v.quantile([c.time_ratio for c in raw if c.time_ratio is not None], 0.5)

    @cached_property
    def ratios(self) -> dict[str, v.RatioCheck]:
        return {r.row.name: r for r in self.summary.gpu_ratios}

    def sps_error(self, name: str) -> float:
        (c,) = [c for c in self.checks if c.run.name == name]
        return c.predicted_sps_per_gpu / c.published_sps_per_gpu - 1

    def max_sps_error(self, prefix: str) -> float:
        return max(
            self.sps_error(c.run.name)
            for c in self.checks
            if c.run.name.startswith(prefix) and c.published_sps_per_gpu
        )


@dataclass(frozen=True)
class Quote:
    doc: str
    quotes: Callable[[Facts], list[str]]


def _raw_model(f: Facts) -> list[str]:
    return [f"The raw per-operation model is about {f.raw_time_ratio:.1f}× too fast on these runs"]


def _coverage(f: Facts) -> list[str]:
    i, s = f.summary.intervals, f.summary.serving_intervals
    assert s is not None
    return [
        f"Held-out coverage today: {i.held_out_inside} of {i.n_held_out} training runs "
        f"({i.held_out_inside / i.n_held_out:.0%};",
        f"results) and {s.held_out_inside} of {s.n_held_out} inference measurements.",
    ]


def _eighteen_b_range(f: Facts) -> list[str]:
    # An 18B eager run's class; its comparable runs as the interval cache (kept equal to the model
    # by tests/planner/test_validation.py) holds them.
    entry = intervals.read_cache()["classes"]["compute/>=10B/eager"]
    assert entry["comparable"].endswith("size class ±3, any stack"), entry["comparable"]  # 0.3 B and up
    return [
        f"its range comes from the {entry['runs']} compute-bound fit-half runs of 0.3 B and up",
        f'("range from {entry["runs"]} comparable published runs")',
    ]


def _result_today(f: Facts) -> list[str]:
    held = f.summary.by_metric["samples_per_s_per_gpu"]["held-out"]
    return [
        f"With the compute scale fitted on both workloads ({f.summary.compute_scale:g}), the held-out "
        f"half's median samples/s error is {held.median_abs:.0%} (|error|)",
        f"the LAION B/32 runs (predicted up to {f.max_sps_error('scaling-b-32-'):+.0%})",
        f"a short L/14 run ({f.sps_error('scaling-l-14-80m-s13b-lr1e-3-b88k'):+.0%})",
        f"NeMo's g/14 on H100 (up to {f.max_sps_error('nemo-g14-h100-'):+.0%})",
    ]


def _loader_ceiling(f: Facts) -> list[str]:
    hw = load_hardware("a100-40gb")  # the LAION runs' hosts
    per_core = data_pipeline.pipeline_per_core_s(hw)
    per_gpu = 1 / data_pipeline.data_loading_s(hw, 1, 8)  # the B/32 run's `--workers=8`
    b32 = [
        r.published_samples_per_s / r.gpus
        for r in load_runs().runs
        if r.model == "openclip-vit-b32" and r.hardware == "a100-40gb" and r.published_samples_per_s
    ]
    return [
        f"(about {per_core:.0f} images/s on the A100 hosts' profile)",
        f"about {round(per_gpu, -2):,.0f} samples/s per GPU, well above the "
        f"{round(min(b32), -1):.0f}–{round(max(b32), -1):.0f} published",
    ]


def _floor(f: Facts) -> list[str]:
    assert f.summary.worst_error_floor is not None
    floor = f.summary.worst_error_floor["all"]
    return [
        f"Today that floor is {floor:.0%} over all runs",
        f"no model of these inputs gets under {floor:.0%}.",
    ]


def _serving_range(f: Facts) -> list[str]:
    s = intervals.read_cache()["serving"]
    every = s["all_measurements"]
    return [
        f"With {s['fit_measurements']} fit-half measurements no class has "
        f"{intervals.read_cache()['min_comparable_runs']} of its own",
        f"the range of all of them ({every['ratio_low']:.2f}–{every['ratio_high']:.2f}:",
    ]


def _cudnn_b200_ratios(f: Facts) -> tuple[float, float]:
    """The two B200 MLPerf ratios with cuDNN attention in place of FlashAttention-2 in their layout (the
    sensitivity docs/planner-model.md and docs/validation.md state)."""
    out = []
    for name in ("mlperf-b200-vs-h100-nvidia", "mlperf-b200-vs-h200-nvidia"):
        row = f.ratios[name].row
        cudnn = row.model_copy(
            update={"clip_layout": row.clip_layout.model_copy(update={"attention": "cudnn"})}
        )
        out.append(v.check_ratio(cudnn, f.summary.compute_scale).model_ratio)
    return out[0], out[1]


def _ratios_validation(f: Facts) -> list[str]:
    r = f.ratios
    h100_a100 = {round(r[n].model_ratio, 1) for n in r if n.startswith("nemo-clip-")}
    assert len(h100_a100) == 1, h100_a100  # "about X×" stands for both NeMo rows
    b200 = ("mlperf-b200-vs-h100-nvidia", "mlperf-b200-vs-h200-nvidia")
    assert all(r[n].inside for n in b200), "docs/validation.md says both B200 ratios are inside"
    logs = sorted(math.log(m / r[n].row.ratio_high) for m, n in zip(_cudnn_b200_ratios(f), b200, strict=True))
    off = [off_range(x) for x in logs]
    return [
        f"Today the model is inside {sum(c.inside for c in r.values())} of the {len(r)} ranges",
        f"its H100/A100 ratio (about {h100_a100.pop():.1f}×) sits in the NeMo comparison table's range and "
        f"{off_range(r['nemo-clip-g14-scaling-h100-vs-a100'].log_error)} above the NeMo scaling table's",
        f"attention in the layout they would be {off[0].removesuffix('%')}–{off[1]} above)",
        f"MI325X/MI300X is {off_range(r['mlperf-mi325x-vs-mi300x-amd'].log_error)} too slow",
    ]


def _ratios_planner_model(f: Facts) -> list[str]:
    r = f.ratios

    def model(name: str) -> str:
        return f"{r[name].model_ratio:.2f}"

    def published(name: str) -> str:
        return f"{r[name].row.ratio_low:.2f}–{r[name].row.ratio_high:.2f}"

    inside = {n: c.inside for n, c in r.items()}
    assert inside == {
        "nemo-clip-g14-scaling-h100-vs-a100": False,
        "nemo-clip-comparison-h100-vs-a100": True,
        "mlperf-h200-vs-h100-nvidia": True,
        "mlperf-b200-vs-h100-nvidia": True,
        "mlperf-b200-vs-h200-nvidia": True,
        "mlperf-mi325x-vs-mi300x-amd": False,
    }, f"docs/planner-model.md says which ratios are inside their ranges: {inside}"
    b200_h100, b200_h200 = "mlperf-b200-vs-h100-nvidia", "mlperf-b200-vs-h200-nvidia"
    cudnn = _cudnn_b200_ratios(f)
    b200_rate = load_hardware("b200").attention.flash_fwd_tflops.value
    h100_rate = load_hardware("h100-sxm").attention.flash_fwd_tflops.value
    return [
        f"comes out {model('nemo-clip-comparison-h100-vs-a100')} at the layout of NVIDIA's comparison table, "
        f"inside it ({published('nemo-clip-comparison-h100-vs-a100')}), and "
        f"{model('nemo-clip-g14-scaling-h100-vs-a100')} at that of its scaling table, outside it "
        f"({published('nemo-clip-g14-scaling-h100-vs-a100')};",
        f"H200/H100 {model('mlperf-h200-vs-h100-nvidia')} is inside MLPerf's "
        f"{published('mlperf-h200-vs-h100-nvidia')}",
        f"B200/H100 {model(b200_h100)} and B200/H200 {model(b200_h200)} are inside MLPerf's "
        f"{published(b200_h100)} and {published(b200_h200)}",
        f"MI325X/MI300X {model('mlperf-mi325x-vs-mi300x-amd')} is below the "
        f"{published('mlperf-mi325x-vs-mi300x-amd')} of AMD's and MangoBoost's submissions",
        f"B200's new tensor-core path, so public measurements put it at about an H100's rate on a B200 "
        f"({b200_rate / h100_rate:.3f}× at head dim 128, 8,192 tokens;",
        f"the two B200 ratios would be {cudnn[0]:.2f} and {cudnn[1]:.2f}, above the ranges",
    ]


def _scales_planner_model(f: Facts) -> list[str]:
    return [
        f"The raw model below is about {f.raw_time_ratio:.1f}× too fast on the training runs",
        f"their fit half alone asks for a scale of {sv.serving_only_scale():g} where both together ask for "
        f"{f.summary.compute_scale:g}",
    ]


def _fp16_rows(f: Facts) -> list[str]:
    e = f.sps_error
    return [
        f"LAION's H/14 and g/14 fp16 rows are predicted {e('laion-blog-h14-fp16-824gpu'):+.0%} and "
        f"{e('laion-blog-g14-fp16-800gpu'):+.0%} where the bf16 ones are "
        f"{e('scaling-h-14-2b-s34b-lr5e-4-b79k'):+.0%} and {e('scaling-g-14-2b-s13b-lr5e-4-b64k'):+.0%}"
    ]


def _patch_dropout_pair(f: Facts) -> list[str]:
    """LAION's bigG/14 with patch dropout 0.5 and its unmasked tuning (accumulation 2): published and
    predicted speed-ups, and the prediction with patch dropout alone switched off."""
    by_name = {c.run.name: c for c in f.checks}
    masked, unmasked = by_name["laion-blog-bigg14-pd05-512gpu"], by_name["laion-blog-bigg14-unmasked-512gpu"]
    alone = v.check_run(
        masked.run.model_copy(update={"patch_dropout": 0.0}), masked.half, masked.compute_scale
    )
    return [
        f"(LAION's bigG/14: {masked.published_sps_per_gpu:.1f} vs {unmasked.published_sps_per_gpu:.1f} samples/s "
        f"per GPU, {masked.published_sps_per_gpu / unmasked.published_sps_per_gpu:.1f}×)",
        f"credits patch dropout 0.5 alone with {masked.predicted_sps_per_gpu / alone.predicted_sps_per_gpu:.1f}× on "
        "that layout",
        f"and the pair with {masked.predicted_sps_per_gpu / unmasked.predicted_sps_per_gpu:.1f}×.",
    ]


def _rates_planner_model(f: Facts) -> list[str]:
    """The measured matmul ratios and the A100 flash rate at EVA02-B/16's vision shape (197 tokens,
    head dim 64) against the H100 measurement there."""
    hw = {n: load_hardware(n) for n in ("a100-80gb", "h100-sxm", "b200", "mi300x", "mi325x")}

    def mamf(a: str, b: str, digits: int) -> str:
        return f"{hw[a].matmul.tflops.value / hw[b].matmul.tflops.value:.{digits}f}"

    a100 = hw["a100-80gb"].attention
    at_b16 = ops.attention_fwd_rate_flops(hw["a100-80gb"], "flash", 197.0, 64, "bf16") / 1e12
    return [
        f"(MAMF: H100 {mamf('h100-sxm', 'a100-80gb', 1)}× A100, B200 {mamf('b200', 'h100-sxm', 1)}× H100, "
        f"MI325X {mamf('mi325x', 'mi300x', 2)}× MI300X)",
        f"({a100.flash_fwd_tflops.value:.0f} TFLOP/s at {a100.seq / 1024:.0f}k tokens, head dim {a100.head_dim})",
        f"puts it at {at_b16:.0f} TFLOP/s at EVA02-B/16's shape, above the "
        f"{hw['h100-sxm'].attention.flash_fwd_tflops.value:g} measured there on an H100",
    ]


def _constants_planner_model(f: Facts) -> list[str]:
    """Figures docs/planner-model.md derives from planner constants (the fitted activation factor,
    the math-SDPA share, DeepSpeed's unfused optimizer loop on EVA02-B/16)."""
    tensors = len(params.param_tensors(load_model("eva02-clip-b16")))
    n_ops = tensors * ops.DS_UNFUSED_OPS_PER_TENSOR
    return [
        f"`ACTIVATION_MEMORY_FACTOR` ({memory.ACTIVATION_MEMORY_FACTOR:g})",
        f"share ({ops.SDPA_MATH_EFFICIENCY:.3f}) of their roofline",
        f"EVA02-B/16 has {tensors} parameter tensors, {n_ops:,.0f} ops, "
        f"{n_ops * ops.HOST_S_PER_TORCH_CALL * 1e3:.0f} ms at {ops.HOST_S_PER_TORCH_CALL * 1e6:.0f} µs per op",
        f"for EVA02-B/16 on 8 GPUs "
        f"{tensors / 8 * ops.DS_ZERO12_OPS_PER_PARTITION_TENSOR * ops.HOST_S_PER_TORCH_CALL * 1e3:.1f} ms",
    ]


SEED = "docs/seed-figures.md"
H100_P5 = "evaplan estimate --model eva-clip-18b --offering aws-p5 --gpus 256"
MI300X = "evaplan estimate --model eva-clip-18b --offering azure-nd-mi300x-v5 --gpus 256"
PUBLISHED_LAYOUT = (
    "--model eva-clip-18b --hardware a100-80gb --gpus 360 --micro-batch 25 --grad-accum 12 --zero-stage 3"
)
GAS_1 = "--model eva-clip-18b --hardware h100-sxm --gpus 256 --micro-batch 422 --grad-accum 1"
SERVE_ALL = (
    "evaplan serve --model eva02-clip-b16 eva02-clip-l14 eva01-clip-g14 eva02-clip-e14-plus eva-clip-8b "
    "eva-clip-18b --offering aws-p5 --batch 64"
)
SERVE_COMPILE = "evaplan serve --model eva02-clip-b16 eva02-clip-l14 eva-clip-18b --offering aws-p5 --batch 64 --stack compile"
SERVE_FP8 = "evaplan serve --model eva-clip-18b --offering aws-p5 --batch 64 --precision fp8"
SERVE_ROUTE = (
    "evaplan serve --model eva02-clip-l14 eva-clip-18b --offering aws-p5 --batch 64 --route-large-share 0.1"
)


def _seed_mi300x(f: Facts) -> list[str]:
    h, m = block(SEED, H100_P5), block(SEED, MI300X)
    h_step, m_step = field(h, "time/step", "step").split()[0], field(m, "time/step", "step").split()[0]
    h_usd, m_usd = field(h, "cost", "on_demand").split()[0], field(m, "cost", "on_demand").split()[0]
    h_node_h = re.search(r"\(\$([0-9.]+)/node-h", field(h, "cost", "on_demand")).group(1)
    slower = float(m_step) / float(h_step) - 1
    cheaper = 1 - first_number(m_usd) / first_number(h_usd)
    needed = 0.79 * float(h_node_h) * float(h_step) / float(m_step)  # the seed's 21 % savings
    return [
        f"give a {m_step} s step against {h_step} s ({slower:.0%} slower) and {m_usd} against {h_usd} "
        f"on-demand ({cheaper:.0%} cheaper",
        f"near 0.79 × ${h_node_h} × {h_step} / {m_step} ≈ ${needed:.1f} per node-hour",
    ]


def _seed_zero_stages(f: Facts) -> list[str]:
    z = {
        s: block(
            SEED, f"evaplan estimate --model eva-clip-18b --hardware h100-sxm --gpus 256 --zero-stage {s}"
        )
        for s in (2, 1, 0)
    }
    eight = block(
        SEED,
        "evaplan estimate --model eva-clip-8b --hardware a100-80gb --gpus 384 --zero-stage 1 --global-batch 178176",
    )

    def layout(out: str) -> str:
        return f"micro-batch {field(out, 'chosen', 'micro_batch').split()[0]} × gas {field(out, 'chosen', 'grad_accum').split()[0]}"

    def total(out: str) -> str:
        return " ".join(field(out, "memory/GPU", "total").split()[:2])

    ckpt = field(eight, "chosen", "grad_ckpt").split()[0] == "True"
    one = re.search(r"does not fit: (.+? usable of \d+ GiB HBM)", field(z[1], "verdict", "fit")).group(1)
    return [
        f"18B, ZeRO-2 on 80 GB GPUs: fits, {total(z[2])} at {layout(z[2])}",
        f"18B, ZeRO-1: does not fit even at {layout(z[1])} ({one}",
        f"18B, ZeRO-0: {first_number(field(z[0], 'memory/GPU', 'total')):.0f} GiB per GPU",
        f"8B, ZeRO-1 on 80 GB: fits ({total(eight)} at {layout(eight)}, {'with' if ckpt else 'without'} checkpointing)",
    ]


def _seed_network(f: Facts) -> list[str]:
    h, pub = block(SEED, H100_P5), block(SEED, f"evaplan estimate {PUBLISHED_LAYOUT}")
    inter = re.search(r"([0-9.]+ GB) inter-node", field(h, "comm/step", "per GPU")).group(1)
    step = field(h, "time/step", "step").split()[0]
    gb_s = float(inter.split()[0]) / float(step)
    gpus_per_node = 8  # AWS p5
    overlappable = field(h, "time/step", "exposed comm").split(" of ")[1]
    return [
        f"each GPU sends {inter} inter-node per {step} s step ({gb_s:.1f} GB/s ≈ {gb_s * 8:.0f} Gbit/s per GPU, "
        f"{gb_s * 8 * gpus_per_node:.0f} Gbit/s per node), and all overlappable communication ({overlappable} "
        f"at the profile's bus bandwidths) hides behind {field(h, 'time/step', 'compute').split(' (')[0]} of compute",
        f"{re.search(r'([0-9.]+ GB) inter-node', field(pub, 'comm/step', 'per GPU')).group(1)} per GPU per step must "
        f"move in ≈ {field(pub, 'time/step', 'compute').split(' (')[0]}",
        f"(exposed {field(h, 'time/step', 'exposed comm')} for the `make estimate` plan); without it the whole "
        f"{overlappable} adds to every step",
    ]


def _seed_other_layouts(f: Facts) -> list[str]:
    a40 = evaplan("estimate", *PUBLISHED_LAYOUT.replace("a100-80gb", "a100-40gb").split())
    gas1 = evaplan("estimate", *GAS_1.split())
    fits = re.search(r"fits: ([0-9.]+ of \d+) GiB", field(a40, "verdict", "fit")).group(1)
    return [
        f"the same plan also moves {field(a40, 'comm/step', 'per GPU').split(' (')[0]} per GPU per step, fits in {fits} GiB, "
        f"and the whole 360-GPU step sends {field(a40, 'comm/step', 'cluster').split(' sent')[0]} (ring bytes)",
        f"the same model moves {field(gas1, 'comm/step', 'per GPU').split(' (')[0]} per GPU per step",
    ]


def on_demand_per_m(cmd: str) -> dict[str, float]:
    """model → on-demand $ per million images in seed-figures.md's block of a `serve` command."""
    return {m: first_number(v) for m, v in serve_column(block(SEED, cmd), "$/M on-dem").items()}


def _seed_serving(f: Facts) -> list[str]:
    eager, comp = on_demand_per_m(SERVE_ALL), on_demand_per_m(SERVE_COMPILE)
    big = "eva-clip-18b"

    def ratio(costs: dict[str, float], small: str) -> str:
        return f"{costs[big] / costs[small]:.1f}×"

    fp8 = serve_column(block(SEED, SERVE_FP8), "$/M on-dem")[big]
    route = block(SEED, SERVE_ROUTE)
    shares = re.search(r"cascade .*?([0-9.]+%) / ([0-9.]+%)\s*$", route, re.M)
    return [
        f"ratio to EVA-CLIP-18B's {eager[big]:g};",
        f"| EVA02-CLIP-B/16 (CLIP-B class) | {ratio(eager, 'eva02-clip-b16')} | {ratio(comp, 'eva02-clip-b16')} |",
        f"| EVA02-CLIP-L/14 (ViT-L class) | {ratio(eager, 'eva02-clip-l14')} | {ratio(comp, 'eva02-clip-l14')} |",
        f"| EVA01-CLIP-g/14 | {ratio(eager, 'eva01-clip-g14')} |",
        f"| EVA02-CLIP-E/14+ | {ratio(eager, 'eva02-clip-e14-plus')} |",
        f"widens the ratio to {comp[big] / comp['eva02-clip-l14']:.0f}×",
        f"In fp8 the 18B costs ${fp8} per million images",
        f"PyTorch ({eager[big] / eager['eva02-clip-l14']:.0f}×; {comp[big] / comp['eva02-clip-l14']:.0f}× compiled)",
        f"the ratio is ~{5 * round(eager[big] / eager['eva02-clip-b16'] / 5):.0f}× for +9.1",  # to 5×
        f"when {shares.group(1)} / {shares.group(2)} of images go to 18B",
    ]


def _seed_serving_terms(f: Facts) -> list[str]:
    out = json.loads(
        evaplan(
            "serve",
            "--model",
            "eva02-clip-b16",
            "eva02-clip-l14",
            "eva-clip-18b",
            "--offering",
            "aws-p5",
            "--batch",
            "64",
            "--format",
            "json",
        )
    )
    img = {p["model"]: p["image"] for p in out["points"]}
    batch = 64
    per_image = {m: i["flops"] / batch for m, i in img.items()}
    l14, big = img["eva02-clip-l14"], img["eva-clip-18b"]
    return [
        f"(18B {per_image['eva-clip-18b'] / 1e12:.2f} TFLOP, L/14 {per_image['eva02-clip-l14'] / 1e9:.0f} GFLOP, "
        f"B/16 {per_image['eva02-clip-b16'] / 1e9:.1f} GFLOP",
        f"{per_image['eva-clip-18b'] / per_image['eva02-clip-l14']:.0f}× and "
        f"{round(per_image['eva-clip-18b'] / per_image['eva02-clip-b16'], -1):.0f}×",
        f"SwiGLU: {l14['memory_s'] * 1e3:.1f} ms) as on its GEMMs ({l14['gemm_s'] * 1e3:.1f} ms)",
        f"GEMM-bound ({big['gemm_s'] * 1e3:,.0f} ms of {big['total_s'] * 1e3:,.0f} ms;",
    ]


def _how_chosen(f: Facts) -> list[str]:
    """README's command table and docs/plan-and-compare.md quote how `make estimate`'s settings were
    chosen, as README's block of that command prints it."""
    how = re.search(r"\((cheapest of \d+ feasible layouts on 256 GPUs)\)", block("README.md", H100_P5)).group(
        1
    )
    return [f'("{how}")']


CASES = {
    "validation-raw-model": Quote("docs/validation.md", _raw_model),
    "validation-coverage": Quote("docs/validation.md", _coverage),
    "validation-18b-range": Quote("docs/validation.md", _eighteen_b_range),
    "validation-result-today": Quote("docs/validation.md", _result_today),
    "validation-loader-ceiling": Quote("docs/validation.md", _loader_ceiling),
    "validation-worst-error-floor": Quote("docs/validation.md", _floor),
    "validation-serving-range": Quote("docs/validation.md", _serving_range),
    "validation-gpu-ratios": Quote("docs/validation.md", _ratios_validation),
    "planner-model-gpu-ratios": Quote("docs/planner-model.md", _ratios_planner_model),
    "planner-model-scales": Quote("docs/planner-model.md", _scales_planner_model),
    "planner-model-fp16-rows": Quote("docs/planner-model.md", _fp16_rows),
    "planner-model-patch-dropout": Quote("docs/planner-model.md", _patch_dropout_pair),
    "planner-model-rates": Quote("docs/planner-model.md", _rates_planner_model),
    "planner-model-constants": Quote("docs/planner-model.md", _constants_planner_model),
    "readme-how-chosen": Quote("README.md", _how_chosen),
    "plan-and-compare-how-chosen": Quote("docs/plan-and-compare.md", _how_chosen),
    "seed-mi300x-vs-h100": Quote(SEED, _seed_mi300x),
    "seed-zero-stages": Quote(SEED, _seed_zero_stages),
    "seed-network": Quote(SEED, _seed_network),
    "seed-other-layouts": Quote(SEED, _seed_other_layouts),
    "seed-serving-costs": Quote(SEED, _seed_serving),
    "seed-serving-terms": Quote(SEED, _seed_serving_terms),
}


@pytest.fixture(scope="module")
def facts() -> Facts:
    return Facts()


@pytest.mark.parametrize("case", CASES)
def test_doc_quotes_todays_figure(case: str, facts: Facts) -> None:
    q = CASES[case]
    text = doc_text(q.doc)
    missing = [s for s in q.quotes(facts) if s not in text]
    assert not missing, f"{q.doc} should quote what the code computes today: " + " | ".join(
        f"`{s}`" for s in missing
    )


def test_a_changed_figure_is_caught(facts: Facts, monkeypatch) -> None:
    """The check can fail: the worst-error floor quoted one point off is reported."""
    floor = facts.summary.worst_error_floor["all"]
    real = doc_text("docs/validation.md")
    wrong = real.replace(f"Today that floor is {floor:.0%}", f"Today that floor is {floor + 0.01:.0%}")
    assert wrong != real
    monkeypatch.setattr(f"{__name__}.doc_text", lambda name: wrong)
    with pytest.raises(AssertionError, match="Today that floor is"):
        test_doc_quotes_todays_figure("validation-worst-error-floor", facts)
