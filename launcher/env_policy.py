"""Which `--env` entries a rendered manifest may carry.

Refused, each with one line naming the fix:
- names the launcher or the controllers set for every pod (torchrun's and the training
  operator's rank variables, the GPU device plugin's visible-devices lists): a user value would
  silently give every pod the same rank or the wrong GPUs;
- secrets, whatever the variable is called: names that say they hold one (…_SECRET…, …_TOKEN,
  …PASSWORD…, …_KEY, PGPASS, …), values shaped like a known credential (AWS key ids and secret
  keys, PEM blocks, GitHub/GitLab/Hugging Face/Slack/OpenAI/Stripe/Google keys, JWTs, URLs and
  connection strings with a password or AccountKey) and random-looking values (entropy). Manifests
  are plain text in the bundle and in the API server; credentials belong in a Secret the pod
  references (--s3-secret, as envFrom). `--env-not-secret NAME` lets a false positive through.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter

from planner.errors import EvaplanError

# torchrun (torch/distributed/run.py, "Environment variables"), torch.distributed env://
# rendezvous, the Indexed Job controller (JOB_COMPLETION_INDEX), evaplan's own NODE_RANK.
RESERVED = frozenset(
    {
        "RANK",
        "LOCAL_RANK",
        "GROUP_RANK",
        "ROLE_RANK",
        "ROLE_NAME",
        "NODE_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "GROUP_WORLD_SIZE",
        "ROLE_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "JOB_COMPLETION_INDEX",
        # The GPU device plugins (NVIDIA k8s-device-plugin, AMD ROCm k8s-device-plugin) choose
        # the GPUs a pod gets through these.
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
    }
)
# torchelastic's agent variables and the Kubeflow training operator's (PET_NODE_RANK, ...).
RESERVED_PREFIXES = ("TORCHELASTIC_", "PET_")

# Name parts (split on _ - .) that say a value is a secret; parts ending in one of the suffixes
# (PGPASS, DBPASS, SSHKEY, MYTOKEN); adjacent pairs that do.
_SECRET_PARTS = frozenset(
    {
        "SECRET",
        "SECRETS",
        "TOKEN",
        "TOKENS",
        "PASSWORD",
        "PASSWD",
        "PASSPHRASE",
        "PWD",
        "CREDENTIAL",
        "CREDENTIALS",
        "CREDS",
        "APIKEY",
        "KEY",
        "KEYS",
    }
)
_SECRET_SUFFIXES = ("PASS", "PASSWD", "PASSWORD", "SECRET", "TOKEN", "KEY")
_SECRET_PAIRS = frozenset(
    {
        ("API", "KEY"),
        ("ACCESS", "KEY"),
        ("PRIVATE", "KEY"),
        ("AUTH", "KEY"),
        ("CONNECTION", "STRING"),
        ("CONN", "STR"),
    }
)
# The shell's working folders (PWD, OLDPWD) are not passwords.
_NOT_SECRET_NAMES = frozenset({"PWD", "OLDPWD"})
# Value shapes of common credentials (each provider's documented token format).
_SECRET_VALUES = (
    ("an AWS access key id", re.compile(r"\b(AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("a PEM block", re.compile(r"-----BEGIN [A-Z0-9 ]+-----")),
    ("a GitHub token", re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})")),
    ("a GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("a Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{30,}")),
    ("a Slack token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    # OpenAI (sk-, sk-proj-), Anthropic (sk-ant-), Stripe (sk_live_, rk_live_, ...).
    ("an API secret key", re.compile(r"\b(sk-[A-Za-z0-9_-]{20,}|[sr]k_(live|test)_[A-Za-z0-9]{16,})")),
    ("a Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),
    ("a JSON Web Token", re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.")),
    ("a URL with a password", re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@")),
    # Azure Storage / Service Bus connection strings and SAS tokens.
    (
        "a connection string with a key",
        re.compile(r"(?i)\b(AccountKey|SharedAccessKey|SharedAccessSignature)=[^;\s]+|[?&]sig=[^&\s]{16,}"),
    ),
    # ADO.NET / ODBC / JDBC key=value connection strings.
    ("a connection string with a password", re.compile(r"(?i)(^|[;\s])(password|pwd)\s*=\s*[^;\s]+")),
    # An AWS secret access key: 40 characters of base64 standing alone.
    ("an AWS secret access key", re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")),
)
# Random-looking values: what a generated credential is, whatever its provider. A run of at least
# 32 hex digits (API keys, HMAC secrets; also git commit ids: --env-not-secret for those), or a
# run of at least 20 letters and digits mixing upper case, lower case and digits with a Shannon
# entropy of at least 4 bits per character (a random base62 string of 20-40 characters has about
# 4.2-5.0; words, paths and identifiers such as eva02_clip_vit_l14 are split at _ - . / and stay
# short or below it). This errs towards refusing: a run name such as Laion2B400MFilteredV2Run12
# looks random too, and --env-not-secret NAME lets it through.
_HEX_RUN = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{32,}(?![0-9A-Za-z])")
_ALNUM_RUN = re.compile(r"[A-Za-z0-9+=]{20,}")
MIN_ENTROPY_BITS = 4.0
_CONTENT_DIGEST = re.compile(r"(?i)\bsha(1|256|384|512):[0-9a-f]+")
SECRET_HINT = (
    "put it in a Kubernetes Secret (kubectl create secret generic NAME --from-literal=KEY=VALUE) "
    "and pass --s3-secret NAME: the pods get every key of that Secret as an environment variable "
    "(envFrom); locally, export it in your shell instead; if it is not a secret, pass "
    "--env-not-secret NAME. evaplan never writes credentials into manifests"
)


def entropy_bits(text: str) -> float:
    """Shannon entropy of the characters of `text`, in bits per character."""
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values()) if n else 0.0


def _random_looking(value: str) -> bool:
    value = _CONTENT_DIGEST.sub("", value)  # an image digest names content, it opens nothing
    if any(re.search("[0-9]", m) and re.search("[A-Za-z]", m) for m in _HEX_RUN.findall(value)):
        return True
    return any(
        re.search("[a-z]", run)
        and re.search("[A-Z]", run)
        and re.search("[0-9]", run)
        and entropy_bits(run) >= MIN_ENTROPY_BITS
        for run in _ALNUM_RUN.findall(value)
    )


def _secret_name(upper: str) -> bool:
    if upper in _NOT_SECRET_NAMES:
        return False
    parts = [p for p in re.split(r"[_.-]+", upper) if p]
    # A key *id* (MY_KEY_ID) names a key without being one; its value is still checked by shape.
    named = [
        p
        for p, after in zip(parts, [*parts[1:], ""], strict=True)
        if not (p.endswith("KEY") and after == "ID")
    ]
    return any(p in _SECRET_PARTS or p.endswith(_SECRET_SUFFIXES) for p in named) or any(
        pair in _SECRET_PAIRS for pair in itertools.pairwise(parts)
    )


def secret_shape(value: str) -> str | None:
    """What `value` looks like when it looks like a credential ("an AWS access key id", ...)."""
    for what, pattern in _SECRET_VALUES:
        if pattern.search(value):
            return what
    return "a random-looking value (a generated key or token)" if _random_looking(value) else None


def check_env_entry(name: str, value: str, *, not_secret: bool = False) -> None:
    """Refuse a reserved or secret-looking `--env NAME=VALUE` (EvaplanError, exit 2). Secrets are
    told by name and by value (known key shapes, random-looking runs); `not_secret` (the user's
    --env-not-secret NAME) skips those checks, never the reserved names. No message quotes the
    value."""
    upper = name.upper()
    what = secret_shape(name)
    if what:  # a key pasted where the name goes: not quoted either
        raise EvaplanError(
            f"an --env name looks like {what} and would be written in clear text", hint=SECRET_HINT
        )
    if upper in RESERVED or upper.startswith(RESERVED_PREFIXES):
        raise EvaplanError(
            f"--env {name} is set by the launcher for each pod (torchrun ranks, rendezvous, GPUs); "
            "one value for every pod would break the job",
            hint=f"drop --env {name}",
        )
    if not_secret:
        return
    if _secret_name(upper):
        raise EvaplanError(
            f"--env {name} looks like a secret and would be written in clear text", hint=SECRET_HINT
        )
    what = secret_shape(value)
    if what:
        raise EvaplanError(
            f"the value of --env {name} looks like {what} and would be written in clear text",
            hint=SECRET_HINT,
        )
