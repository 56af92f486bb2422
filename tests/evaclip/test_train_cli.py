"""`evaplan train` (a thin wrapper of `python -m evaclip.train`) and the trainer's input errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_print_command(cli, tmp_path):
    ds, run = tmp_path / "ds.json", tmp_path / "run.json"
    ds.write_text("{}")
    run.write_text("{}")
    res = cli(
        "train", "--ds-config", str(ds), "--run-config", str(run), "--nproc-per-node", "2", "--print-command"
    )
    assert res.exit_code == 0
    assert res.stdout.strip().endswith(
        f"-m evaclip.rank_launcher --standalone --nproc_per_node=2 -m evaclip.train --ds-config {ds} --run-config {run}"
    )


def test_init_and_compile_flags_pass_through(cli, tmp_path):
    ds, run = tmp_path / "ds.json", tmp_path / "run.json"
    ds.write_text("{}")
    run.write_text("{}")
    base = ("train", "--ds-config", str(ds), "--run-config", str(run), "--print-command")
    res = cli(
        *base, "--init-vision-from", "s3://b/eva02_L_mim.pt", "--init-strict", "false", "--compile", "off"
    )
    assert res.exit_code == 0
    assert res.stdout.strip().endswith(
        f"--run-config {run} --init-vision-from s3://b/eva02_L_mim.pt --init-strict false --compile off"
    )
    res = cli(*base, "--init-from", "a.pt", "--init-text-from", "b.pt")
    assert res.exit_code == 2 and "--init-from loads both towers" in res.output


def test_missing_config_is_a_usage_error(cli, tmp_path):
    res = cli(
        "train", "--ds-config", str(tmp_path / "nope.json"), "--run-config", str(tmp_path / "nope.json")
    )
    assert res.exit_code == 2


@pytest.mark.parametrize(
    ("ds", "run", "message"),
    [
        ("{not json", "{}", "is not valid JSON"),
        ("{}", "{}", "lacks a positive integer train_micro_batch_size_per_gpu"),
        (
            '{"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "train_batch_size": 1}',
            '{"job_name": "x"}',
            "run.json: model: Field required",
        ),
    ],
)
def test_trainer_input_errors_are_one_line(tmp_path, ds, run, message):
    pytest.importorskip("torch")
    (tmp_path / "ds.json").write_text(ds)
    (tmp_path / "run.json").write_text(run)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "evaclip.train",
            "--ds-config",
            str(tmp_path / "ds.json"),
            "--run-config",
            str(tmp_path / "run.json"),
        ],
        capture_output=True,
        text=True,
        timeout=900,  # a backstop only: idle this takes ~10 s; load 8 makes it 5-10× slower
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr


def test_lamb_with_a_deepspeed_built_optimizer_is_refused(tmp_path):
    from evaclip.train import load_configs
    from planner.errors import EvaplanError
    from planner.profiles import load_model

    ds = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "train_batch_size": 1,
        "optimizer": {"type": "AdamW", "params": {}},
    }
    run = {
        "job_name": "x",
        "model": load_model("eva-clip-debug").model_dump(mode="json"),
        "total_steps": 1,
        "image_size": 32,
        "patch_dropout": 0.0,
        "image_lr": 1e-3,
        "text_lr": 1e-3,
        "optimizer": "lamb",
    }
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    (tmp_path / "run.json").write_text(json.dumps(run))
    with pytest.raises(EvaplanError, match="no CPU LAMB"):
        load_configs(str(tmp_path / "ds.json"), str(tmp_path / "run.json"))


def test_a_precision_this_cpu_lacks_is_one_line(tmp_path, trainer):
    """fp16 where oneDNN has no fp16 kernels (e.g. AMD EPYC): one `error:` line and exit 2 before
    DeepSpeed's own "Type fp16 is not supported on your device" traceback."""
    from evaclip.cpu_precision import cpu_precision_unsupported

    why = cpu_precision_unsupported("fp16")
    if why is None:
        pytest.skip("this CPU trains in fp16 (oneDNN fp16): nothing to refuse")
    ds = trainer.ds_config_for(0, micro_batch=2, precision="fp16")
    ds["train_batch_size"] = 2  # one rank
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    (tmp_path / "run.json").write_text(json.dumps(trainer.debug_run_config(tmp_path / "out", total_steps=1)))
    args = ["--ds-config", str(tmp_path / "ds.json"), "--run-config", str(tmp_path / "run.json")]
    proc = subprocess.run(
        [sys.executable, "-m", "evaclip.train", *args],
        capture_output=True,
        text=True,
        timeout=900,  # a backstop only: idle this takes ~10 s; load 8 makes it 5-10× slower
    )
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert lines == [
        f"error: cannot train in fp16 here: {why} (re-render the plan with --precision bf16 to train on this CPU)"
    ]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("flag", ["--init-from", "--init-vision-from", "--init-text-from"])
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_init_path_is_an_error(cli, tmp_path, flag, value):
    """`--init-from "$UNSET"` must not train from scratch: one line, exit 2, from `evaplan train`
    and from the trainer itself (whose flags a bundle's command line passes)."""
    import argparse

    from evaclip.train import apply_overrides
    from planner.errors import EvaplanError

    ds, run = tmp_path / "ds.json", tmp_path / "run.json"
    ds.write_text("{}")
    run.write_text("{}")
    res = cli("train", "--ds-config", str(ds), "--run-config", str(run), flag, value, "--print-command")
    assert res.exit_code == 2, res.output
    assert f"{flag} is empty" in res.output and len(res.output.strip().splitlines()) == 1
    args = argparse.Namespace(init_from=None, init_vision_from=None, init_text_from=None)
    setattr(args, flag.removeprefix("--").replace("-", "_"), value)
    args.init_strict = args.compile = None
    with pytest.raises(EvaplanError, match=f"{flag} is empty"):
        apply_overrides(None, args)  # type: ignore[arg-type]  # refused before the run is read


def test_a_failing_load_on_two_ranks_is_one_line(tmp_path, trainer):
    """Both ranks stop on rank 0's load failure; `evaplan train` says so once, exit 2, without
    torchrun's ChildFailedError traceback and failure table."""
    (tmp_path / "ds.json").write_text(json.dumps(trainer.ds_config_for(0, micro_batch=2)))
    (tmp_path / "run.json").write_text(json.dumps(trainer.debug_run_config(tmp_path / "out", total_steps=1)))
    missing = tmp_path / "nope.pt"
    configs = ["--ds-config", str(tmp_path / "ds.json"), "--run-config", str(tmp_path / "run.json")]
    train = ["launcher.cli", "train", "--nproc-per-node", "2", *configs, "--init-from", str(missing)]
    # A backstop only: idle this takes ~10 s; load 8 makes it 5-10× slower.
    proc = subprocess.run([sys.executable, "-m", *train], capture_output=True, text=True, timeout=900)
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert errors == [
        f"error: init checkpoint {missing} does not exist (give a file path or an s3:// URI)"
    ], proc.stderr
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr


def test_rank_launcher_names_the_failure_in_one_line(tmp_path, monkeypatch):
    """What evaclip.rank_launcher prints for torchrun's failures: a rank's own line (its code), a
    crash or a signal by rank and code, nothing for a run that every rank ended on preemption."""
    pytest.importorskip("torch")
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    from evaclip.rank_launcher import failure_line, report_rank_error

    def failure(rank: int, code: int, line: str | None = None) -> ProcessFailure:
        path = tmp_path / f"error-{rank}-{code}.json"
        if line is not None:
            monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(path))
            monkeypatch.setenv("EVACLIP_PARENT_REPORTS_ERRORS", "1")
            report_rank_error(line)
        return ProcessFailure(local_rank=rank, pid=100 + rank, exitcode=code, error_file=str(path))

    bad = {0: failure(0, 2, "init checkpoint x.pt does not exist"), 1: failure(1, -15)}
    assert failure_line(bad) == ("init checkpoint x.pt does not exist", 2)
    assert failure_line({0: failure(0, 1, "S3: cannot write"), 1: failure(1, 2, "bad")}) == ("bad", 2)
    assert failure_line({0: failure(0, -9), 1: failure(1, 0)}) == (
        "the trainer's rank 0 stopped with signal SIGKILL (see its output above)",
        1,
    )
    assert failure_line({0: failure(0, 143), 1: failure(1, 143)}) == (None, 143)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
        (b"\xff\xfe{}", "is not UTF-8 text"),
    ],
    ids=["deep", "binary"],
)
@pytest.mark.parametrize("which", ["ds", "run"])
def test_config_files_json_cannot_hold_are_one_line(tmp_path, content, message, which):
    """Both config files are read in-process before any rank starts (was a RecursionError or
    UnicodeDecodeError traceback)."""
    from evaclip.train import load_configs
    from planner.errors import EvaplanError

    ds = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "train_batch_size": 1}
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    (tmp_path / "run.json").write_text("{}")
    (tmp_path / f"{which}.json").write_bytes(content)
    with pytest.raises(EvaplanError, match=message) as err:
        load_configs(str(tmp_path / "ds.json"), str(tmp_path / "run.json"))
    assert "\n" not in err.value.line()
