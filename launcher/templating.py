"""The Jinja2 side of rendering: the environment over templates/ and the filters every value goes
through (`tojson`, `yaml_literal`, `shquote`, `sbatch_value`). The manifests (launcher/render.py)
and the Slurm script (launcher/slurm_script.py) both render through it, so neither imports the other
for it. Jinja2 itself is imported on first render only (start-up of the commands that never render).
"""

from __future__ import annotations

import json
import re
import shlex
from functools import cache
from typing import Any

from planner.errors import EvaplanError

_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")


def yaml_tojson(value: Any, indent: int | None = None) -> str:
    """JSON text that YAML 1.1 and 1.2 parsers read back as the same value.

    JSON is YAML, except for characters YAML treats as line breaks or as non-printable inside a
    double-quoted scalar (C1 controls, NEL, U+2028/2029, BOM, non-characters): those are written
    as \\u escapes. Non-BMP characters stay literal: PyYAML would read a JSON surrogate-pair escape
    back as two lone surrogates.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, indent=indent, allow_nan=False)
    except ValueError as e:
        raise EvaplanError(f"cannot render {value!r}: {e}", hint="use finite numbers") from None
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def yaml_literal(text: str, indent: int) -> str:
    """A YAML literal block (`|`) holding `text` exactly: ASCII printable lines ending in a newline."""
    if (
        not text.endswith("\n")
        or text.startswith((" ", "\n"))
        or any(c != "\n" and not " " <= c <= "~" for c in text)
    ):
        raise EvaplanError(
            "internal: a literal block must be ASCII lines ending in a newline", hint="report this as a bug"
        )
    pad = " " * indent
    return "|\n" + "\n".join(pad + line if line else "" for line in text[:-1].split("\n"))


@cache
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("templates", ""),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=False,
    )
    env.filters["tojson"] = yaml_tojson
    env.filters["yaml_literal"] = yaml_literal
    env.filters["shquote"] = lambda v: shlex.quote(str(v))
    env.filters["sbatch_value"] = sbatch_value
    return env


def render_template(name: str, **context: Any) -> str:
    import jinja2

    try:
        text = _environment().get_template(name).render(**context)
    except jinja2.UndefinedError as e:
        raise EvaplanError(f"template {name}: {e.message}", hint="report this as a bug") from None
    return text if text.endswith("\n") else text + "\n"


_SBATCH_VALUE = re.compile(r"[A-Za-z0-9_.,:@%/&|()\[\]*+=-]+")


def sbatch_value(value: Any) -> str:
    """An #SBATCH option's value: plain characters only (sbatch reads the line without a shell), so
    a value that would need quoting is refused, never passed on altered."""
    text = str(value)
    if not _SBATCH_VALUE.fullmatch(text):
        raise EvaplanError(f"internal: {text!r} cannot be an #SBATCH value", hint="report this as a bug")
    return text
