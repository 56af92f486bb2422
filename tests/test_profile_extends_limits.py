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
