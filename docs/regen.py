"""Regenerate the example outputs in README.md and docs/*.md from the commands that print them.

    .venv/bin/python docs/regen.py           # rewrite every block with what its command prints now
    .venv/bin/python docs/regen.py --check   # change nothing; list the blocks that differ, exit 1 if any

A block is a fenced code block between two HTML comments; the first names the command:

    <!-- evaplan-output: evaplan estimate --model eva-clip-18b --hardware h100-sxm --gpus 256 -->
    ```text
    ...what the command prints (stdout, then stderr)...
    ```
    <!-- /evaplan-output -->

A block whose body is not fenced (a command run with `--format markdown`) holds the output as is,
so that a table renders as a table.

Each command is an `evaplan ...` command line, or `python benchmarks/SCRIPT.py ...` for a figure that
only a benchmarks/ script prints (no shell: no pipes, globs or variables). It runs with this venv's
`evaplan` (or its python; the scripts import this checkout's packages), from the repository root, in a
clean environment so that nothing of the person running it leaks in: HOME is an empty temporary folder (no user calibration, config or job
store), no EVAPLAN_* variable is passed, COLUMNS and the locale are fixed. Distinct commands run in
parallel. tests/test_docs_in_sync.py runs `check()` and fails on drift.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(
    r"(?P<open><!-- evaplan-output: (?P<cmd>.+?) -->\n)(?P<body>.*?)(?P<close><!-- /evaplan-output -->)",
    re.DOTALL,
)
FENCE = "```text\n"
COLUMNS = "120"
# A command should finish in seconds; this only stops a hung one from hanging the check.
COMMAND_TIMEOUT_S = 600


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening comment
    cmd: str
    body: str  # what sits between the two comments, fence included


@dataclass(frozen=True)
class Drift:
    block: Block
    message: str

    def line(self) -> str:
        rel = self.block.path.relative_to(REPO) if self.block.path.is_relative_to(REPO) else self.block.path
        return f"{rel}:{self.block.line}: `{self.block.cmd}`: {self.message}"


def doc_files(repo: Path = REPO) -> list[Path]:
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def find_blocks(path: Path, text: str | None = None) -> list[Block]:
    text = path.read_text(encoding="utf-8") if text is None else text
    return [
        Block(path, text.count("\n", 0, m.start()) + 1, m.group("cmd").strip(), m.group("body"))
        for m in BLOCK.finditer(text)
    ]


def _evaplan() -> str:
    """The evaplan beside this interpreter (the venv's), else the one on PATH."""
    here = Path(sys.executable).parent / "evaplan"
    return str(here) if here.is_file() else "evaplan"


def clean_env(home: str) -> dict[str, str]:
    keep = {k: os.environ[k] for k in ("PATH", "SYSTEMROOT", "TMPDIR") if k in os.environ}
    return {
        **keep,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + keep.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "COLUMNS": COLUMNS,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "PYTHONHASHSEED": "0",
        "NO_COLOR": "1",
    }


def is_benchmark_script(argv: list[str]) -> bool:
    """`python benchmarks/NAME.py ...`: a script of this repository's benchmarks/ folder."""
    return (
        len(argv) >= 2
        and argv[0] == "python"
        and argv[1].startswith("benchmarks/")
        and argv[1].endswith(".py")
        and ".." not in argv[1]
    )


def command_argv(cmd: str) -> list[str]:
    """The argv a block's command runs as: this venv's evaplan, or its python on a benchmarks/ script."""
    argv = shlex.split(cmd)
    if argv and argv[0] == "evaplan":
        return [_evaplan(), *argv[1:]]
    if is_benchmark_script(argv):
        return [sys.executable, *argv[1:]]
    raise ValueError(
        f"`{cmd}` is neither an evaplan command nor `python benchmarks/SCRIPT.py` (what a block may run)"
    )


def run_command(cmd: str) -> str:
    """What `cmd` prints, stdout then stderr, as the block shows it (ends with one newline)."""
    with tempfile.TemporaryDirectory(prefix="evaplan-docs-home-") as home:
        proc = subprocess.run(
            command_argv(cmd),
            cwd=REPO,
            env=clean_env(home),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    out = proc.stdout + proc.stderr
    if "Traceback (most recent call last)" in out:
        raise RuntimeError(f"`{cmd}` crashed:\n{out[-2000:]}")
    return out.rstrip("\n") + "\n"


def run_all(cmds: Iterable[str], workers: int | None = None) -> dict[str, str]:
    unique = sorted(set(cmds))
    workers = workers or max(1, min(len(unique), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return dict(zip(unique, pool.map(run_command, unique), strict=True))


def is_fenced(body: str) -> bool:
    return body.startswith("```")


def render_body(output: str, fenced: bool = True) -> str:
    return f"{FENCE}{output}```\n" if fenced else output + "\n"  # a blank line ends a table


def _first_difference(old: str, new: str) -> str:
    a, b = old.splitlines(), new.splitlines()
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"line {i + 1} of the block: committed {x!r}, command prints {y!r}"
    if len(a) != len(b):
        i = min(len(a), len(b))
        return (
            f"line {i + 1} of the block: committed has {len(a)} lines, command prints {len(b)} "
            f"(first extra: {(a if len(a) > len(b) else b)[i]!r})"
        )
    return "differs in whitespace only"


def check(files: Iterable[Path] | None = None, outputs: dict[str, str] | None = None) -> list[Drift]:
    """Every block whose committed text differs from what its command prints now."""
    files = list(files or doc_files())
    blocks = [b for f in files for b in find_blocks(f)]
    outputs = outputs if outputs is not None else run_all(b.cmd for b in blocks)
    drifts = []
    for b in blocks:
        want = render_body(outputs[b.cmd], is_fenced(b.body))
        if b.body != want:
            drifts.append(Drift(b, _first_difference(b.body.removeprefix(FENCE), want.removeprefix(FENCE))))
    return drifts


def rewrite(files: Iterable[Path] | None = None, outputs: dict[str, str] | None = None) -> list[Path]:
    """Rewrite the blocks of each file in place; returns the files that changed."""
    files = list(files or doc_files())
    if outputs is None:
        outputs = run_all(b.cmd for f in files for b in find_blocks(f))
    changed = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        new = BLOCK.sub(
            lambda m: (
                m.group("open")
                + render_body(outputs[m.group("cmd").strip()], is_fenced(m.group("body")))
                + m.group("close")
            ),
            text,
        )
        if new != text:
            f.write_text(new, encoding="utf-8")
            changed.append(f)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="report drift, change nothing; exit 1 on drift")
    ap.add_argument("files", nargs="*", type=Path, help="markdown files (default: README.md, docs/*.md)")
    a = ap.parse_args(argv)
    files = [p.resolve() for p in a.files] or doc_files()
    if a.check:
        drifts = check(files)
        for d in drifts:
            print(d.line())
        n = sum(len(find_blocks(f)) for f in files)
        print(f"{n - len(drifts)} of {n} block(s) match what their commands print")
        return 1 if drifts else 0
    changed = rewrite(files)
    for f in changed:
        print(f"rewrote {f.relative_to(REPO) if f.is_relative_to(REPO) else f}")
    if not changed:
        print("every block is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
