"""Export a trained model to the official EVA-CLIP layout (docs/weights.md), so the official code
(`eva_clip.create_model_and_transforms(..., pretrained=<file>)`) and its evaluation can read it.

    python -m evaclip.export --checkpoint-dir out/checkpoints [--tag step00000120] \\
        --run-config run.json --out eva-clip.pt [--s3-out s3://bucket/key]

The checkpoint is one evaclip wrote (evaclip.checkpoint, DeepSpeed's files); any ZeRO stage. The
fp32 weights come from DeepSpeed's own consolidation (`deepspeed.utils.zero_to_fp32`, on the CPU,
no GPU or process group needed); without ZeRO, from the model states file. Written as a plain
state dict of fp32 tensors (`torch.save`); nothing is written when anything fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from planner.errors import EvaplanError


def _latest_tag(ckpt_dir: Path) -> str:
    latest = ckpt_dir / "latest"
    if not latest.is_file():
        raise EvaplanError(f"{ckpt_dir} has no `latest` file", hint="pass --tag stepNNNNNNNN")
    return latest.read_text().strip()


def consolidated_state_dict(ckpt_dir: Path, tag: str) -> dict:
    """fp32 weights of a DeepSpeed checkpoint, in evaclip's names."""
    import torch

    tag_dir = ckpt_dir / tag
    if not tag_dir.is_dir():
        raise EvaplanError(f"checkpoint {tag_dir} does not exist", hint="check --checkpoint-dir and --tag")
    if any(tag_dir.glob("*optim_states.pt")) and any(tag_dir.glob("zero_pp_rank_*")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return dict(get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag))
    states = sorted(tag_dir.glob("mp_rank_*_model_states.pt"))
    if not states:
        raise EvaplanError(f"{tag_dir} holds no DeepSpeed model states", hint="is it an evaclip checkpoint?")
    # Without ZeRO the model states hold the full 16-bit or fp32 weights.
    module = torch.load(states[0], map_location="cpu", weights_only=False)["module"]
    return {k: v.float() for k, v in module.items()}


def export(ckpt_dir: Path, tag: str | None, run_config: str, out: Path) -> Path:
    import torch

    from evaclip.pretrained import to_official
    from evaclip.train import load_run_config

    run = load_run_config(run_config)
    tag = tag or _latest_tag(ckpt_dir)
    sd = consolidated_state_dict(ckpt_dir, tag)
    official = to_official(sd, run.model, run.image_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(official, tmp)
    tmp.replace(out)  # never a half-written export under the final name
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaclip.export", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint-dir", required=True, type=Path, help="evaclip checkpoint folder")
    p.add_argument("--tag", default=None, help="checkpoint tag (default: the `latest` file's)")
    p.add_argument("--run-config", required=True, help="the run's evaclip RunConfig JSON")
    p.add_argument("--out", required=True, type=Path, help="file to write (torch.save state dict)")
    p.add_argument("--s3-out", default=None, help="also upload the file to this s3:// URI")
    args = p.parse_args(argv)
    try:
        from evaclip import storage

        uri = storage.parse_s3_uri(args.s3_out) if args.s3_out else None  # bad URI: fail before work
        out = export(args.checkpoint_dir, args.tag, args.run_config, args.out)
        if uri is not None:
            with storage.s3_errors(f"upload {out} to {uri}"):
                storage.client().upload_file(str(out), uri.bucket, uri.key)
    except EvaplanError as e:
        print(f"error: {e.line()}", file=sys.stderr, flush=True)
        return e.exit_code
    print(f"wrote {out} (official EVA-CLIP layout)" + (f" and {args.s3_out}" if args.s3_out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
