"""Which `--env` entries a rendered manifest may carry.

Refused, each with one line naming the fix:
- names the launcher or the controllers set for every pod (torchrun's and the training
  operator's rank variables, the GPU device plugin's visible-devices lists): a user value would
  silently give every pod the same rank or the wrong GPUs;
- secrets: names that say they hold one (…_SECRET…, …_TOKEN, …PASSWORD…, …_API_KEY, …) and values
  shaped like a known credential (AWS access key ids, private keys, GitHub/Hugging Face/Slack
  tokens, JWTs, URLs with a password). Manifests are plain text in the bundle and in the API
  server; credentials belong in a Secret the pod references.
"""

from __future__ import annotations

import itertools
import re

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

# Name parts (split on _ - .) that say a value is a secret; and adjacent pairs that do.
_SECRET_PARTS = frozenset(
    {
        "SECRET",
        "SECRETS",
        "TOKEN",
        "TOKENS",
        "PASSWORD",
        "PASSWD",
        "PASSPHRASE",
        "CREDENTIAL",
        "CREDENTIALS",
        "APIKEY",
    }
)
_SECRET_PAIRS = frozenset({("API", "KEY"), ("ACCESS", "KEY"), ("PRIVATE", "KEY"), ("AUTH", "KEY")})
# Value shapes of common credentials (each provider's documented token format).
_SECRET_VALUES = (
    ("an AWS access key id", re.compile(r"\b(AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("a GitHub token", re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})")),
    ("a Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{30,}")),
    ("a Slack token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    ("a JSON Web Token", re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.")),
    ("a URL with a password", re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@")),
)
SECRET_HINT = (
    "put it in a Kubernetes Secret and reference it (--s3-secret NAME for AWS keys, as envFrom); "
    "evaplan never writes credentials into manifests"
)


def check_env_entry(name: str, value: str) -> None:
    """Refuse a reserved or secret-looking `--env NAME=VALUE` (EvaplanError, exit 2)."""
    upper = name.upper()
    if upper in RESERVED or upper.startswith(RESERVED_PREFIXES):
        raise EvaplanError(
            f"--env {name} is set by the launcher for each pod (torchrun ranks, rendezvous, GPUs); "
            "one value for every pod would break the job",
            hint=f"drop --env {name}",
        )
    parts = [p for p in re.split(r"[_.-]+", upper) if p]
    if any(p in _SECRET_PARTS for p in parts) or any(
        pair in _SECRET_PAIRS for pair in itertools.pairwise(parts)
    ):
        raise EvaplanError(
            f"--env {name} looks like a secret and would be written in clear text", hint=SECRET_HINT
        )
    for what, pattern in _SECRET_VALUES:
        if pattern.search(value):
            raise EvaplanError(
                f"the value of --env {name} looks like {what} and would be written in clear text",
                hint=SECRET_HINT,
            )
