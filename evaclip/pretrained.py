"""Start from released weights, and export to the official layout (docs/weights.md).

Layouts read (all `torch.save`d dicts, optionally wrapped in a `model` / `module` / `state_dict`
entry and with DDP's `module.` prefix, as the official `load_state_dict` accepts):
- official EVA-CLIP (baaivision/EVA, EVA-CLIP/rei and EVA-CLIP-18B/shinji `CustomCLIP.state_dict()`):
  `visual.*`, `text.*`, a 0-d `logit_scale`, and RoPE tables `visual.rope.freqs_cos|sin` plus one
  copy per block, `visual.blocks.<i>.attn.rope.freqs_cos|sin` (the blocks share the module);
- OpenCLIP / OpenAI-style text towers: `token_embedding.weight`, `positional_embedding`,
  `transformer.resblocks.*`, `ln_final.*`, `text_projection` at the top level (the official
  `convert_to_custom_text_state_dict` moves them under `text.`);
- vision-only checkpoints (EVA MIM weights): the tower's keys without the `visual.` prefix.

evaclip's own names are the official ones (planner.params lists them), except `logit_scale`, which
is (1,) here (see EvaCLIP.__init__), and the RoPE tables, which evaclip derives from the
architecture instead of storing. So import = unwrap + rename + drop the derived tables (after
checking they are the ones evaclip computes) + resize the position embedding (and the patch kernel)
for a new grid, bicubic as the official `resize_eva_pos_embed`; export = the reverse.

Loading is strict by default: any missing, unexpected or reshaped key stops the run with one error
line after one report of all of them; not strict, the matching tensors load and the rest keep
their initialisation, with the same report. Under ZeRO-3 only rank 0 reads the file; each parameter
is gathered, written on rank 0 and re-partitioned (`deepspeed.zero.GatheredParameters` with
`modifier_rank=0`), one at a time, so no rank holds the whole model.
"""

from __future__ import annotations

import math
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from evaclip import storage
from planner.errors import EvaplanError, RuntimeFailure

Part = Literal["model", "vision", "text"]
PREFIX: dict[Part, str] = {"model": "", "vision": "visual.", "text": "text."}
_WRAPPERS = ("model", "module", "state_dict")  # the official load_state_dict's `model_key`
# Top-level keys of an OpenCLIP / OpenAI CLIP state dict that belong to the text tower (official
# model.py `convert_to_custom_text_state_dict`).
_OPENCLIP_TEXT = ("text_projection", "positional_embedding", "token_embedding", "transformer", "ln_final")
_ROPE_RE = re.compile(r"(^|\.)rope\.freqs_(cos|sin)$")


# --------------------------------------------------------------------------- reading
def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def read_checkpoint(uri: str, scratch: Path | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint at a local path or s3:// URI (an S3 object is downloaded to a
    temporary file under `scratch` first and removed after reading)."""
    if storage.is_s3(uri):
        s3 = storage.parse_s3_uri(uri)
        if scratch is not None:
            scratch.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="evaclip-init-", dir=scratch))
        try:
            local = tmp / (Path(s3.key).name or "checkpoint.pt")
            try:
                with storage.s3_errors(f"download {uri}"):
                    storage.client().download_file(s3.bucket, s3.key, str(local))
            except RuntimeFailure as e:  # weights the store cannot serve: the user's input (exit 2)
                raise EvaplanError(e.message, hint=e.hint) from None
            return read_checkpoint(str(local))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    path = Path(uri)
    if not path.is_file():
        raise EvaplanError(f"init checkpoint {uri} does not exist", hint="give a file path or an s3:// URI")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # type: ignore[import-not-found]

            raw: Any = load_file(str(path))
        else:
            try:  # memory-mapped: an 18B fp32 checkpoint (73 GB) is paged in tensor by tensor
                raw = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # the legacy (non-zip) format cannot be mapped
                raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except ImportError:
        raise EvaplanError(f"{uri} is a safetensors file", hint="pip install safetensors") from None
    except Exception as e:  # not a torch file, truncated, pickled objects beyond tensors
        raise EvaplanError(
            f"init checkpoint {uri} cannot be read: {type(e).__name__}: {str(e).splitlines()[0][:200]}",
            hint="give a torch.save'd state dict (.pt/.bin) or a .safetensors file",
        ) from None
    return unwrap(raw, uri)


def unwrap(raw: Any, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: a `model`/`module`/`state_dict` entry if present, and
    without DDP's `module.` prefix."""
    for key in _WRAPPERS:
        if isinstance(raw, Mapping) and key in raw and isinstance(raw[key], Mapping):
            raw = raw[key]
            break
    if not isinstance(raw, Mapping) or not raw:
        raise EvaplanError(f"{what} holds no state dict", hint="give a checkpoint saved with torch.save")
    sd = {str(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


# --------------------------------------------------------------------------- layouts
def rope_tables(head_width: int, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The official VisionRotaryEmbeddingFast's (freqs_cos, freqs_sin) for a grid: what evaclip's
    RotaryEmbedding2D computes."""
    from evaclip.model import RotaryEmbedding2D

    rope = RotaryEmbedding2D(head_width, grid)
    return rope.cos.clone(), rope.sin.clone()


def _tower_keys(sd: dict[str, torch.Tensor], part: Part) -> dict[str, torch.Tensor]:
    """The keys of `part`, in evaclip's full-model names (`visual.…`, `text.…`, `logit_scale`)."""
    if any(k.startswith(_OPENCLIP_TEXT) for k in sd) and not any(k.startswith("text.") for k in sd):
        # OpenCLIP layout: the text tower at the top level.
        sd = {("text." + k if k.startswith(_OPENCLIP_TEXT) else k): v for k, v in sd.items()}
    if "text.logit_scale" in sd:  # an older official layout kept it under the text tower
        sd = dict(sd)
        sd["logit_scale"] = sd.pop("text.logit_scale")
    if part == "model":
        return dict(sd)  # a new dict: callers delete from it
    prefix = PREFIX[part]
    mine = {k: v for k, v in sd.items() if k.startswith(prefix)}
    if not mine and part == "vision" and not any(k.startswith("text.") for k in sd):
        # A vision-only checkpoint (EVA MIM): the tower's own names.
        mine = {prefix + k: v for k, v in sd.items()}
    return mine


def from_official(sd: dict[str, torch.Tensor], part: Part = "model") -> tuple[dict[str, torch.Tensor], int]:
    """Official / OpenCLIP names → evaclip names for `part`; returns (state dict, RoPE tables
    dropped). The RoPE tables are checked by `load_pretrained` against the derived ones."""
    out = _tower_keys(sd, part)
    dropped = 0
    for k in [k for k in out if _ROPE_RE.search(k)]:
        del out[k]
        dropped += 1
    if "logit_scale" in out and out["logit_scale"].dim() == 0:
        out["logit_scale"] = out["logit_scale"].reshape(1)
    return out, dropped


def to_official(
    sd: Mapping[str, torch.Tensor], model_spec: Any, image_size: int | None = None
) -> dict[str, torch.Tensor]:
    """evaclip names → the official EVA-CLIP layout (0-d logit_scale, RoPE tables at `visual.rope`
    and in every block), tensors detached on the CPU."""
    out = {k: v.detach().cpu().clone() for k, v in sd.items()}
    if "logit_scale" in out:
        out["logit_scale"] = out["logit_scale"].reshape(())
    v = model_spec.vision
    if v.rope:
        grid = (image_size or v.image_size) // v.patch_size
        cos, sin = rope_tables(v.head_width, grid)
        for prefix in ["visual.rope"] + [f"visual.blocks.{i}.attn.rope" for i in range(v.depth)]:
            out[f"{prefix}.freqs_cos"], out[f"{prefix}.freqs_sin"] = cos.clone(), sin.clone()
    return out


def resize_pos_embed(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, 1 + g², w) → (1, 1 + grid², w): the CLS entry kept, the patch grid resized bicubically
    (official `resize_eva_pos_embed`)."""
    n = pos.shape[1] - 1
    old = math.isqrt(n)
    patches = pos[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos.dtype)
    return torch.cat((pos[:, :1], patches), dim=1)


def resize_patch_kernel(weight: torch.Tensor, patch: int) -> torch.Tensor:
    """Conv kernel (w, 3, p, p) → (w, 3, patch, patch), bicubic, as the official code does when the
    grid changes."""
    return F.interpolate(weight.float(), size=(patch, patch), mode="bicubic", align_corners=False).to(
        weight.dtype
    )


# --------------------------------------------------------------------------- report
@dataclass
class LoadReport:
    source: str
    part: Part
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reshaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    resized: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    rope_tables: int = 0

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.reshaped)

    def summary(self) -> str:
        return (
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, {len(self.reshaped)} reshaped"
        )

    def lines(self) -> list[str]:
        out = [
            f"init {self.part} from {self.source}: {len(self.loaded)} tensors loaded; {self.summary()}"
            + (f"; {self.rope_tables} RoPE tables checked and skipped (derived)" if self.rope_tables else "")
        ]
        for name, old, new in self.resized:
            out.append(f"  resized     {name}: {list(old)} -> {list(new)}")
        for label, names in (("missing", self.missing), ("unexpected", self.unexpected)):
            for pattern, n in _collapse(names):
                out.append(f"  {label:<11} {pattern}" + (f" (x{n})" if n > 1 else ""))
        for pattern, n, shapes in _collapse_shapes(self.reshaped):
            out.append(
                f"  reshaped    {pattern}: checkpoint {shapes[0]} vs model {shapes[1]}"
                + (f" (x{n})" if n > 1 else "")
            )
        return out


def _collapse(names: Iterable[str]) -> list[tuple[str, int]]:
    """Group names that differ only in their block index: `visual.blocks.*.attn.q_bias (x12)`."""
    counts: dict[str, int] = {}
    for n in names:
        key = re.sub(r"\.\d+\.", ".*.", n)
        counts[key] = counts.get(key, 0) + 1
    return sorted(counts.items())


def _collapse_shapes(
    items: Iterable[tuple[str, tuple[int, ...], tuple[int, ...]]],
) -> list[tuple[str, int, tuple[list[int], list[int]]]]:
    groups: dict[tuple[str, tuple[int, ...], tuple[int, ...]], int] = {}
    for name, old, new in items:
        key = (re.sub(r"\.\d+\.", ".*.", name), tuple(old), tuple(new))
        groups[key] = groups.get(key, 0) + 1
    return [(k[0], n, (list(k[1]), list(k[2]))) for k, n in sorted(groups.items())]


# --------------------------------------------------------------------------- matching
def _shape(p: torch.Tensor) -> tuple[int, ...]:
    return tuple(getattr(p, "ds_shape", p.shape))


def match(
    model: nn.Module, sd: dict[str, torch.Tensor], part: Part, source: str, rope_dropped: int = 0
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Compare a converted state dict with the model's parameters of `part`: resize the position
    embedding / patch kernel for the model's grid, and sort every key into loaded, missing,
    unexpected or reshaped."""
    prefix = PREFIX[part]
    targets = {n: _shape(p) for n, p in model.named_parameters() if n.startswith(prefix)}
    report = LoadReport(source, part, rope_tables=rope_dropped)
    ready: dict[str, torch.Tensor] = {}
    for name, t in sd.items():
        if name not in targets:
            report.unexpected.append(name)
            continue
        want = targets[name]
        if tuple(t.shape) != want and name == "visual.pos_embed" and t.dim() == 3 and t.shape[-1] == want[-1]:
            n, m = t.shape[1] - 1, want[1] - 1
            if math.isqrt(n) ** 2 == n and math.isqrt(m) ** 2 == m:
                report.resized.append((name, tuple(t.shape), want))
                t = resize_pos_embed(t, math.isqrt(m))
        if (
            tuple(t.shape) != want
            and name == "visual.patch_embed.proj.weight"
            and t.dim() == 4
            and t.shape[:2] == want[:2]
        ):
            report.resized.append((name, tuple(t.shape), want))
            t = resize_patch_kernel(t, want[-1])
        if tuple(t.shape) != want:
            report.reshaped.append((name, tuple(t.shape), want))
            continue
        ready[name] = t
        report.loaded.append(name)
    report.missing = [n for n in targets if n not in sd]
    return ready, report


def check_rope_tables(sd: dict[str, torch.Tensor], spec: Any) -> str | None:
    """None when the checkpoint's RoPE tables are the ones evaclip derives for their grid; else why."""
    tables = {k: v for k, v in sd.items() if _ROPE_RE.search(k)}
    if not tables:
        return None
    v = spec.vision
    any_table = next(iter(tables.values()))
    if (
        any_table.dim() != 2
        or any_table.shape[1] != v.head_width
        or math.isqrt(any_table.shape[0]) ** 2 != any_table.shape[0]
    ):
        return f"RoPE tables of shape {list(any_table.shape)} do not fit head width {v.head_width}"
    cos, sin = rope_tables(v.head_width, math.isqrt(any_table.shape[0]))
    for k, t in tables.items():
        if not t.is_floating_point():
            return f"{k} holds {t.dtype} values, not a RoPE table"
        # Compared in the file's own dtype: the official releases are fp16 (model.half() before
        # torch.save), so every entry is our fp32 value rounded once; the official fp32 arithmetic may
        # differ from ours in the last fp32 bits and round the other way, hence one unit in the last
        # place at magnitude 1 (fp16 9.8e-4, bf16 7.8e-3; fp32 files keep 1e-4). Another theta or
        # layout moves entries by 0.1-1.
        atol = max(1e-4, torch.finfo(t.dtype).eps)
        ref = (cos if k.endswith("cos") else sin).to(t.dtype)
        if t.shape != ref.shape or not torch.allclose(t.float(), ref.float(), atol=atol, rtol=0.0):
            return f"{k} differs from the RoPE table of this architecture (not EVA02 2-D RoPE?)"
    return None


# --------------------------------------------------------------------------- loading
def _broadcast_object(obj: Any) -> Any:
    _, world = _rank_world()
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _write_params(model: nn.Module, tensors: dict[str, torch.Tensor], names: list[str]) -> None:
    """Copy rank 0's tensors into the model's parameters `names` on every rank: per parameter under
    ZeRO-3 (gather, write on rank 0, re-partition), else a broadcast from rank 0."""
    rank, world = _rank_world()
    params = dict(model.named_parameters())
    # NCCL broadcasts device tensors only; the model is still on the host before deepspeed.initialize.
    via = (
        torch.device("cuda", torch.cuda.current_device())
        if world > 1 and dist.get_backend() == "nccl"
        else None
    )
    for name in names:
        p = params[name]
        if hasattr(p, "ds_id"):
            import deepspeed

            with deepspeed.zero.GatheredParameters([p], modifier_rank=0):
                if rank == 0:
                    with torch.no_grad():
                        p.data.copy_(tensors[name].reshape(p.shape))
            continue
        with torch.no_grad():
            if rank == 0:
                p.data.copy_(tensors[name])
            if world > 1:
                buf = p.data.to(via) if via is not None and p.device != via else p.data
                dist.broadcast(buf, src=0)
                if buf is not p.data:
                    p.data.copy_(buf)


def load_pretrained(
    model: nn.Module,
    spec: Any,
    *,
    model_uri: str | None = None,
    vision_uri: str | None = None,
    text_uri: str | None = None,
    strict: bool = True,
    scratch: Path | None = None,
    log: Any = None,
) -> list[LoadReport]:
    """Initialise `model` (an EvaCLIP, possibly ZeRO-3 partitioned) from released weights.
    Collective: every rank calls it; rank 0 reads. Raises EvaplanError (on every rank) when strict
    and something does not match, after printing the report on rank 0."""
    rank, _ = _rank_world()
    log = log or (lambda line: print(f"[evaclip] {line}", file=sys.stderr, flush=True))
    reports: list[LoadReport] = []
    for part, uri in (("model", model_uri), ("vision", vision_uri), ("text", text_uri)):
        if not uri:
            continue
        # (exception class, message, hint) of a failure on rank 0, shared so every rank stops.
        failure: tuple[type[EvaplanError], str, str | None] | None = None
        ready: dict[str, torch.Tensor] = {}
        report: LoadReport | None = None
        if rank == 0:
            try:
                raw = read_checkpoint(uri, scratch)
                sd, dropped = from_official(raw, part)  # type: ignore[arg-type]
                why = check_rope_tables(_tower_keys(raw, part), spec)  # type: ignore[arg-type]
                del raw
                if why:
                    raise EvaplanError(f"init checkpoint {uri}: {why}", hint="check which model it holds")
                ready, report = match(model, sd, part, uri, dropped)  # type: ignore[arg-type]
                for line in report.lines():
                    log(line)
                what = "towers" if part == "model" else f"{part} tower"
                if not report.loaded:
                    failure = (
                        EvaplanError,
                        f"init checkpoint {uri} holds no tensor of {spec.name}'s {what}",
                        "check the path and the model profile",
                    )
                elif strict and not report.clean:
                    failure = (
                        EvaplanError,
                        f"init checkpoint {uri} does not match {spec.name} ({report.summary()}; listed above)",
                        "pass --init-strict false (run config init_from.strict: false) to load the matching tensors",
                    )
            except EvaplanError as e:
                failure = (type(e), e.message, e.hint)
        failure, names = _broadcast_object((failure, report.loaded if report and not failure else []))
        if failure:
            cls, message, hint = failure
            raise cls(message, hint=hint)
        _write_params(model, ready, names)
        if report is not None:
            reports.append(report)
    return reports


# --------------------------------------------------------------------------- export
def official_state_dict(
    model: nn.Module, spec: Any, image_size: int | None = None
) -> dict[str, torch.Tensor]:
    """The model's weights in the official layout (fp32, CPU). For a ZeRO-3 model every rank must
    call it (each parameter is gathered in turn); all ranks get the full dict."""
    out: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        if hasattr(p, "ds_id"):
            import deepspeed

            with deepspeed.zero.GatheredParameters([p]):
                out[name] = p.detach().float().cpu().clone()
        else:
            out[name] = p.detach().float().cpu().clone()
    return to_official(out, spec, image_size)
