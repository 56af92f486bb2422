"""Find, load and validate profiles (models, hardware, offerings) from YAML.

Bundled profiles ship inside the wheel (the `profiles` package). Users add or override profiles
from a folder given by `--profiles-dir` or the `EVAPLAN_PROFILES_DIR` environment variable
(several folders separated by the OS path separator); a user profile wins over a bundled one
with the same name. The folder layout is the bundled one: `models/`, `hardware/`, `offerings/`.

A user profile may start from a bundled one: `extends: aws-p5` and only the fields that differ
(mappings merge key by key; a figure whose value changes without a source cites the user's file).
Profile files must be regular files under 1 MiB with at most 64 YAML aliases.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from planner.calibration_spec import CalibrationSpec
from planner.errors import ProfileError
from planner.spec import HardwareSpec, ModelSpec, OfferingSpec

ENV_VAR = "EVAPLAN_PROFILES_DIR"

KINDS: dict[str, type[BaseModel]] = {
    "models": ModelSpec,
    "hardware": HardwareSpec,
    "offerings": OfferingSpec,
    "calibrations": CalibrationSpec,  # written by `evaplan calibrate` (planner/calibration.py)
}
# The singular a user may type: `evaplan profiles show --kind model`.
KIND_ALIASES = {
    "model": "models",
    "hardware": "hardware",
    "offering": "offerings",
    "calibration": "calibrations",
}

T = TypeVar("T", bound=BaseModel)


def bundled_dir() -> Path:
    import profiles  # the package-data folder shipped in the wheel

    return Path(profiles.__file__).resolve().parent


def search_dirs(user_dirs: Sequence[str | Path] | None = None) -> list[Path]:
    """Folders to read, lowest priority first: bundled, then $EVAPLAN_PROFILES_DIR, then flags."""
    dirs = [bundled_dir()]
    env = os.environ.get(ENV_VAR, "")
    for part in env.split(os.pathsep):
        if part.strip():
            dirs.append(Path(part).expanduser())
    for d in user_dirs or ():
        dirs.append(Path(d).expanduser())
    for d in dirs[1:]:
        if not d.is_dir():
            raise ProfileError(
                f"profiles folder {d} does not exist",
                hint=f"create it with models/, hardware/ or offerings/ inside, or fix {ENV_VAR} / --profiles-dir",
            )
    return dirs


@dataclass(frozen=True)
class ProfileRef:
    kind: str
    name: str
    path: Path
    bundled: bool


def _format_loc(loc: Iterable[Any]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _fix_for(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "remove it or check its spelling against `evaplan profiles show` of a bundled profile"
    if kind == "missing":
        return "add it"
    if kind in ("finite_number",):
        return "give a finite number"
    if kind.startswith("greater_than") or kind.startswith("less_than"):
        return "use a value in range"
    return "fix the value"


def format_validation_error(path: Path | str, exc: ValidationError) -> str:
    """One line per problem: `file: field: message (fix)`; the first line leads."""
    lines = []
    for err in exc.errors():
        loc = _format_loc(err.get("loc", ()))
        msg = err.get("msg", "invalid")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        lines.append(f"{path}: {loc}: {msg} ({_fix_for(err)})")
    return "; ".join(lines)


MAX_PROFILE_BYTES = 1 << 20  # 1 MiB: the largest bundled profile is under 8 KiB
MAX_YAML_ALIASES = 64  # bundled profiles use none; a "billion laughs" file needs dozens
# Bundled profiles nest 4 levels at most (a sourced figure in a mapping in a list); a few thousand
# brackets exhaust the YAML parser's (and any walker's) Python recursion.
MAX_YAML_DEPTH = 16


class _LimitedLoader(yaml.SafeLoader):
    """SafeLoader that refuses more than MAX_YAML_ALIASES aliases: an alias bomb (a few hundred bytes
    that expand into billions of nodes when walked) is refused before anything walks it."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            self.aliases_seen = getattr(self, "aliases_seen", 0) + 1
            if self.aliases_seen > MAX_YAML_ALIASES:
                raise _TooManyAliases()
        return super().compose_node(parent, index)


class _TooManyAliases(Exception):
    pass


# libyaml's parser when PyYAML was built with it (the wheels are): several times faster than the
# pure-Python one, with the same SafeConstructor and resolver, so the same values (published_runs.yaml:
# 0.29 s against 0.02 s here). A text takes the fast path when it holds at most MAX_YAML_ALIASES
# aliases: none when it has no '*' (every alias starts with it), else as libyaml's own event stream
# counts them (a quote's '*' is no alias); any other text, and any text libyaml rejects, is read by
# _LimitedLoader, whose count and error messages are the ones users see.
_FastLoader: type | None = getattr(yaml, "CSafeLoader", None)


def _aliases_within_limit(text: str) -> bool:
    if "*" not in text:
        return True
    aliases = sum(isinstance(e, yaml.events.AliasEvent) for e in yaml.parse(text, Loader=_FastLoader))
    return aliases <= MAX_YAML_ALIASES


def _load_yaml(text: str) -> Any:
    if _FastLoader is not None:
        try:
            if _aliases_within_limit(text):
                return yaml.load(text, Loader=_FastLoader)
        except yaml.YAMLError:
            pass  # read again below for the pure-Python parser's message
    return yaml.load(text, Loader=_LimitedLoader)


def _read_text_limited(path: Path) -> str:
    """The file's text, if it is a regular file (not a FIFO, device or link to one) under the cap."""
    try:
        st = os.stat(path)  # follows links: a link to /dev/zero is a character device
    except OSError as e:
        raise ProfileError(f"{path}: cannot read ({e.strerror})", hint="check the path") from None
    if not stat.S_ISREG(st.st_mode):
        raise ProfileError(
            f"{path}: not a regular file (a FIFO, device or folder)", hint="point at a .yaml file"
        )
    if st.st_size > MAX_PROFILE_BYTES:
        raise ProfileError(
            f"{path}: {st.st_size:,} bytes, over the {MAX_PROFILE_BYTES:,}-byte limit for a profile",
            hint="a profile is a few KiB of YAML; check the file",
        )
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PROFILE_BYTES + 1)
    except OSError as e:
        raise ProfileError(f"{path}: cannot read ({e.strerror})", hint="check the path") from None
    if len(raw) > MAX_PROFILE_BYTES:  # grew after the stat
        raise ProfileError(
            f"{path}: over the {MAX_PROFILE_BYTES:,}-byte limit for a profile", hint="check the file"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: not UTF-8 text", hint="save the profile as UTF-8 YAML") from None


def _too_deep(path: Path) -> ProfileError:
    return ProfileError(
        f"{path}: nested deeper than {MAX_YAML_DEPTH} levels",
        hint="a profile nests a few levels; check the file",
    )


def _check_depth(path: Path, data: Any) -> None:
    """Refuse nesting beyond MAX_YAML_DEPTH (iteratively, so the check itself cannot recurse)."""
    stack = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth >= MAX_YAML_DEPTH:
                raise _too_deep(path)
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))


def _read_yaml(path: Path) -> dict[str, Any]:
    text = _read_text_limited(path)
    try:
        data = _load_yaml(text)
    except RecursionError:
        raise _too_deep(path) from None
    except _TooManyAliases:
        raise ProfileError(
            f"{path}: more than {MAX_YAML_ALIASES} YAML aliases (an alias bomb?)",
            hint="write the values out; profiles need no anchors",
        ) from None
    except (ValueError, TypeError, OverflowError) as e:  # a tagged value the constructor refuses
        raise ProfileError(
            f"{path}: a value YAML cannot read ({type(e).__name__}: {' '.join(str(e).split())[:200]})",
            hint="write plain numbers, strings and dates",
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ProfileError(f"{path}:{where}: malformed YAML: {problem}", hint="fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise ProfileError(
            f"{path}: expected a mapping of keys at the top level", hint="see a bundled profile"
        )
    _check_depth(path, data)
    _reject_nan(path, data, ())
    return data


# ------------------------------------------------------------------------------------------ extends
MAX_EXTENDS_DEPTH = 8


def _resolved(path: Path) -> Path:
    """path.resolve(), with a symlink loop (RuntimeError before Python 3.13, OSError after) as one line."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        raise ProfileError(f"{path}: a symbolic link loop", hint="point the link at a .yaml file") from None


def _base_path(path: Path, kind: str, base: str) -> Path:
    """The profile `extends: base` names: the highest-priority one of that name other than this file
    (so a user's aws-p5.yaml may extend the bundled aws-p5)."""
    roots = [bundled_dir()]
    roots += [Path(p).expanduser() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    me = _resolved(path)
    roots.append(me.parent.parent)
    found = None
    for root in roots:
        cand = root / kind / f"{base}.yaml"
        if cand.is_file() and _resolved(cand) != me:
            found = cand
    if found is None:
        raise ProfileError(
            f"{path}: extends: no {kind.removesuffix('s')} profile named '{base}'",
            hint="name a bundled profile (`evaplan profiles list`) or one beside this file",
        )
    return found


def _is_sourced(node: Any) -> bool:
    return isinstance(node, dict) and "value" in node and "source" in node


def deep_merge(base: dict[str, Any], override: dict[str, Any], path: Path, loc: str = "") -> dict[str, Any]:
    """base with override's keys replacing or (for mappings) merging into base's. A sourced figure
    ({value, source, observed}) whose value is overridden without a source names this file."""
    out = dict(base)
    for k, v in override.items():
        where = f"{loc}.{k}" if loc else str(k)
        old = base.get(k)
        if isinstance(v, dict) and isinstance(old, dict):
            merged = deep_merge(old, v, path, where)
            if _is_sourced(old) and "value" in v and "source" not in v:
                merged["source"] = f"user profile {path.name} (overrides {where})"
                merged["observed"] = v.get("observed", date.today())
                merged.pop("note", None)
            out[k] = merged
        else:
            out[k] = v
    return out


def _resolve_extends(path: Path, kind: str, data: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    base_name = data.get("extends")
    if base_name is None:
        return data
    if not isinstance(base_name, str):
        raise ProfileError(f"{path}: extends: must be a profile name", hint="e.g. extends: aws-p5")
    if depth >= MAX_EXTENDS_DEPTH:
        raise ProfileError(
            f"{path}: extends: more than {MAX_EXTENDS_DEPTH} levels (a loop?)",
            hint="extend a bundled profile",
        )
    base_path = _base_path(path, kind, base_name)
    base = _resolve_extends(base_path, kind, _read_yaml(base_path), depth + 1)
    own = {k: v for k, v in data.items() if k != "extends"}
    merged = deep_merge(base, own, path)
    merged["name"] = own.get("name", path.stem)
    return merged


def _reject_nan(path: Path, node: Any, loc: tuple[Any, ...]) -> None:
    # YAML's .nan/.inf reach pydantic as floats; allow_inf_nan catches most, but say it plainly.
    if isinstance(node, float) and not math.isfinite(node):
        raise ProfileError(
            f"{path}: {_format_loc(loc)}: {node} is not a finite number", hint="give a finite number"
        )
    if isinstance(node, dict):
        for k, v in node.items():
            _reject_nan(path, v, (*loc, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _reject_nan(path, v, (*loc, i))


def load_file(path: str | Path, kind: str | None = None) -> BaseModel:
    """Load one profile file; the kind comes from its folder name unless given."""
    path = Path(path)
    kind = kind or _kind_from_path(path)
    model = KINDS[kind]
    data = _resolve_extends(path, kind, _read_yaml(path))
    try:
        obj = model.model_validate(data)
    except ValidationError as e:
        raise ProfileError(format_validation_error(path, e)) from None
    expected = path.stem
    if getattr(obj, "name", expected) != expected:
        raise ProfileError(
            f"{path}: name: '{obj.name}' differs from the file name '{expected}'",  # type: ignore[attr-defined]
            hint=f"rename the file to {obj.name}.yaml or set name: {expected}",  # type: ignore[attr-defined]
        )
    return obj


def _kind_from_path(path: Path) -> str:
    parent = _resolved(path).parent.name
    if parent in KINDS:
        return parent
    raise ProfileError(
        f"{path}: cannot tell the profile kind from its folder '{parent}'",
        hint="put it in a models/, hardware/ or offerings/ folder",
    )


def index(kind: str, user_dirs: Sequence[str | Path] | None = None) -> dict[str, ProfileRef]:
    """Every profile of a kind, by name; later folders override earlier ones."""
    kind = normalize_kind(kind)
    found: dict[str, ProfileRef] = {}
    for i, d in enumerate(search_dirs(user_dirs)):
        folder = d / kind
        if not folder.is_dir():
            continue
        for p in sorted(folder.glob("*.yaml")):
            found[p.stem] = ProfileRef(kind=kind, name=p.stem, path=p, bundled=(i == 0))
    return dict(sorted(found.items()))


def normalize_kind(kind: str) -> str:
    if kind in KINDS:
        return kind
    if kind in KIND_ALIASES:
        return KIND_ALIASES[kind]
    raise ProfileError(f"unknown profile kind '{kind}'", hint=f"use one of {', '.join(KINDS)}")


def _load(kind: str, name: str, user_dirs: Sequence[str | Path] | None) -> BaseModel:
    refs = index(kind, user_dirs)
    if name not in refs:
        close = [n for n in refs if name.replace("_", "-").lower() in n or n in name.lower()]
        hint = f"did you mean {', '.join(close[:3])}?" if close else f"choose one of: {', '.join(refs)}"
        raise ProfileError(f"no {kind.removesuffix('s')} profile named '{name}'", hint=hint)
    return _load_cached(kind, str(refs[name].path))


@cache
def _load_cached(kind: str, path: str) -> BaseModel:
    return load_file(path, kind)


def load_model(name: str, user_dirs: Sequence[str | Path] | None = None) -> ModelSpec:
    return _load("models", name, user_dirs)  # type: ignore[return-value]


def load_hardware(name: str, user_dirs: Sequence[str | Path] | None = None) -> HardwareSpec:
    return _load("hardware", name, user_dirs)  # type: ignore[return-value]


def load_calibration(name: str, user_dirs: Sequence[str | Path] | None = None) -> CalibrationSpec:
    return _load("calibrations", name, user_dirs)  # type: ignore[return-value]


def load_offering(name: str, user_dirs: Sequence[str | Path] | None = None) -> OfferingSpec:
    off: OfferingSpec = _load("offerings", name, user_dirs)  # type: ignore[assignment]
    hw = load_hardware(off.hardware, user_dirs) if off.hardware in index("hardware", user_dirs) else None
    if hw is None:
        raise ProfileError(
            f"offering '{name}' names hardware '{off.hardware}', which has no profile",
            hint="add profiles/hardware/" + off.hardware + ".yaml or fix the offering",
        )
    if hw.gpus_per_node != off.gpus_per_node:
        raise ProfileError(
            f"offering '{name}' has {off.gpus_per_node} GPUs per node but hardware '{hw.name}' has {hw.gpus_per_node}",
            hint="make them agree",
        )
    return off


def validate_paths(paths: Sequence[str | Path]) -> list[tuple[Path, BaseModel]]:
    """Validate files or folders (recursively); raises on the first bad file."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.rglob("*.yaml")))
        elif p.exists():
            files.append(p)
        else:
            raise ProfileError(f"{p}: no such file or folder", hint="check the path")
    if not files:
        raise ProfileError("no .yaml files found in the given paths", hint="name profile files or folders")
    return [(f, load_file(f)) for f in files]
