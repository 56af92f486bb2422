"""User profiles: `extends: NAME` overrides a few fields of a bundled profile; files that are not
regular, too large, or alias bombs are refused with one line and exit code 2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from planner import profiles as prof
from planner.errors import ProfileError

BOMB = "\n".join(
    f"{x}: &{x} [" + ",".join([f"*{p}"] * 9 if p else ['"lol"'] * 9) + "]"
    for p, x in zip([None, *"abcdefgh"], "abcdefghi", strict=True)
)


def test_extends_overrides_a_few_fields(user_profiles: Path) -> None:
    (user_profiles / "offerings" / "my-p5.yaml").write_text(
        "extends: aws-p5\ndisplay_name: AWS p5, our discount\n"
        "on_demand_usd_per_node_hour: {value: 40.0, source: 'our contract 2026', observed: 2026-10-01}\n"
        "spot_usd_per_node_hour: {value: 20.0}\n"
    )
    off = prof.load_offering("my-p5", [user_profiles])
    base = prof.load_offering("aws-p5")
    assert off.name == "my-p5" and off.on_demand_usd_per_node_hour.value == 40.0
    assert off.on_demand_usd_per_node_hour.source == "our contract 2026"
    assert off.spot_usd_per_node_hour.value == 20.0 and "my-p5.yaml" in off.spot_usd_per_node_hour.source
    assert off.committed_usd_per_node_hour == base.committed_usd_per_node_hour  # inherited
    assert off.fabric == base.fabric


def test_a_user_profile_may_extend_the_bundled_one_of_its_name(user_profiles: Path) -> None:
    (user_profiles / "models" / "eva02-clip-b16.yaml").write_text(
        "extends: eva02-clip-b16\nrecipe: {image_size: 256}\n"
    )
    m = prof.load_model("eva02-clip-b16", [user_profiles])
    assert (
        m.recipe.image_size == 256
        and m.recipe.global_batch == prof.load_model("eva02-clip-b16").recipe.global_batch
    )


@pytest.mark.parametrize(
    "text,needle",
    [
        ("extends: no-such-offering\n", "no offering profile named 'no-such-offering'"),
        ("extends: [aws-p5]\n", "must be a profile name"),
        ("extends: aws-p5\nbogus_field: 1\n", "bogus_field"),
    ],
)
def test_bad_extends_is_one_line(user_profiles: Path, text: str, needle: str) -> None:
    (user_profiles / "offerings" / "x1.yaml").write_text(text)
    with pytest.raises(ProfileError) as e:
        prof.load_offering("x1", [user_profiles])
    assert needle in e.value.line() and "\n" not in e.value.line()


def test_extends_loop_is_refused(user_profiles: Path) -> None:
    (user_profiles / "offerings" / "la.yaml").write_text("extends: lb\n")
    (user_profiles / "offerings" / "lb.yaml").write_text("extends: la\n")
    with pytest.raises(ProfileError, match="levels"):
        prof.load_offering("la", [user_profiles])


def test_alias_bomb_is_refused(user_profiles: Path, cli) -> None:
    path = user_profiles / "offerings" / "bomb.yaml"
    path.write_text(BOMB + "\n")
    assert len(path.read_bytes()) < 500
    r = cli("--profiles-dir", str(user_profiles), "profiles", "show", "bomb")
    assert r.exit_code == 2 and "YAML aliases" in r.output and len(r.output.strip().splitlines()) == 1


def test_size_cap(user_profiles: Path) -> None:
    path = user_profiles / "offerings" / "big.yaml"
    path.write_text("# " + "x" * prof.MAX_PROFILE_BYTES + "\nname: big\n")
    with pytest.raises(ProfileError, match="byte limit"):
        prof.load_offering("big", [user_profiles])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_and_device_links_are_refused(user_profiles: Path, cli) -> None:
    os.mkfifo(user_profiles / "offerings" / "fifo.yaml")
    (user_profiles / "offerings" / "zero.yaml").symlink_to("/dev/zero")
    for name in ("fifo", "zero"):
        r = cli("--profiles-dir", str(user_profiles), "profiles", "show", name)
        assert r.exit_code == 2 and "not a regular file" in r.output


def test_symlink_loops_are_one_line(user_profiles: Path, cli) -> None:
    """A link to itself, or two links to each other: every command that reads profiles says so in one
    line (`profiles validate` was "internal error: RuntimeError: Symlink loop")."""
    models = user_profiles / "models"
    (models / "self.yaml").symlink_to("self.yaml")
    (models / "a.yaml").symlink_to("b.yaml")
    (models / "b.yaml").symlink_to("a.yaml")
    for args in (
        ["profiles", "validate", str(user_profiles)],
        ["profiles", "validate", str(models / "a.yaml")],
        ["profiles", "show", "self"],
        ["estimate", "--model", "a", "--hardware", "h100-sxm", "--gpus", "8"],
    ):
        r = cli("--profiles-dir", str(user_profiles), *args)
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2, (args, r.output)
        assert len(lines) == 1 and "internal error" not in r.output, (args, r.output)


@pytest.mark.parametrize(
    "text",
    [
        "x: " + "[" * 5000 + "]" * 5000,  # deeper than the YAML parser's recursion
        "x: " + "{a: " * 200 + "1" + "}" * 200,  # parsed, but deeper than any profile
    ],
    ids=["flow-5000", "mapping-200"],
)
def test_deep_nesting_is_one_line(user_profiles: Path, cli, text: str) -> None:
    (user_profiles / "models" / "deep.yaml").write_text(text)
    r = cli("--profiles-dir", str(user_profiles), "profiles", "show", "deep")
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert "nested deeper than" in lines[0], r.output


@pytest.mark.parametrize(
    ("kind", "text", "args", "field"),
    [
        (
            "models",
            "vision: {depth: 100000000000}",
            ["estimate", "--hardware", "h100-sxm", "--gpus", "8"],
            "vision.depth",
        ),
        ("models", "vision: {width: 100000000000000}", ["plan", "--hardware", "h100-sxm"], "vision.width"),
        (
            "models",
            "vision: {mlp_ratio: 1.0e+300}",
            ["estimate", "--hardware", "h100-sxm", "--gpus", "8"],
            "vision.mlp_ratio",
        ),
        (
            "models",
            "text: {vocab_size: 100000000000000}",
            ["plan", "--hardware", "h100-sxm"],
            "text.vocab_size",
        ),
        (
            "models",
            "recipe: {global_batch: 100000000000000}",
            ["plan", "--hardware", "h100-sxm"],
            "recipe.global_batch",
        ),
        ("hardware", "hbm_gib: {value: 1.0e+300}", ["serve", "--model", "eva02-clip-b16"], "hbm_gib.value"),
        (
            "offerings",
            "observed_on: !!timestamp 2020-13-45",
            ["serve", "--model", "eva02-clip-b16"],
            "YAML cannot read",
        ),
    ],
    ids=["depth", "width", "mlp-ratio", "vocab", "global-batch", "hbm", "timestamp"],
)
def test_figures_beyond_any_model_or_machine_are_one_line(
    user_profiles: Path, cli, kind: str, text: str, args: list[str], field: str
) -> None:
    """A user profile's figure that would crash or overflow the planner (a depth of 10^11 allocated
    until the process died; a width of 10^14 overflowed; 10^300 GiB of HBM overflowed serve's replica
    count; an impossible date raised ValueError) is refused in one line, exit 2."""
    base = {"models": "eva02-clip-b16", "hardware": "h100-sxm", "offerings": "aws-p5"}[kind]
    (user_profiles / kind / "mine.yaml").write_text(f"extends: {base}\n{text}\n")
    pick = {
        "models": ["--model", "mine"],
        "hardware": ["--hardware", "mine"],
        "offerings": ["--offering", "mine"],
    }
    r = cli("--profiles-dir", str(user_profiles), *args[:1], *pick[kind], *args[1:])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert field in lines[0] and "internal error" not in lines[0], r.output
