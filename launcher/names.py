"""Validation of every user string that ends up in a rendered manifest.

A value either renders as exactly the literal the user typed, inside valid YAML, or is refused
here with one line that names the flag, the rule and an example of a valid value. Names follow
the Kubernetes validation rules verbatim (k8s.io/apimachinery/pkg/util/validation/validation.go:
IsDNS1123Label, IsDNS1035Label, IsDNS1123Subdomain, IsQualifiedName, IsValidLabelValue,
IsEnvVarName); images follow the distribution reference grammar
(github.com/distribution/reference, regexp.go).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from planner.errors import EvaplanError

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
LABEL_VALUE_MAX = 63

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_ENV_VAR_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
# Linux network interface names (IFNAMSIZ = 16 with the NUL); NCCL also accepts a ^ (exclude) or
# = (exact) prefix and comma-separated lists (NCCL docs, NCCL_SOCKET_IFNAME).
_IFNAME_LIST = re.compile(r"[\^=]?[A-Za-z0-9_.:-]{1,15}(,[A-Za-z0-9_.:-]{1,15})*")
# NCCL_IB_HCA: "[^][=]mlx5_0[:1][,mlx5_1[:1]...]" (NCCL docs, NCCL_IB_HCA).
_HCA_LIST = re.compile(r"[\^]?=?[A-Za-z0-9_.-]+(:[0-9]+)?(,[A-Za-z0-9_.-]+(:[0-9]+)?)*")

# distribution/reference grammar, anchored: [domain[:port]/]path[:tag][@digest].
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_IMAGE_REFERENCE = re.compile(
    rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?", re.ASCII
)
IMAGE_NAME_MAX = 255  # distribution/reference NameTotalLengthMax (the name part, without tag)


def _refuse(what: str, value: str, rule: str, example: str) -> EvaplanError:
    return EvaplanError(f"{what} {value!r} is not valid: {rule}", hint=f"e.g. {example}")


def _fullmatch_check(
    pattern: re.Pattern[str], rule: str, example: str, max_len: int | None = None
) -> Callable[[str, str], str]:
    """A checker that returns the value when `pattern` matches all of it (and it is at most
    `max_len` characters), else refuses it naming the rule: one shape for every name rule below."""

    def check(value: str, what: str) -> str:
        if (max_len is not None and len(value) > max_len) or not pattern.fullmatch(value):
            raise _refuse(what, value, rule, example)
        return value

    return check


def check_text(value: str, what: str) -> str:
    """Any free-form user string (an env value, a URI): rendered literally, so only characters
    that no YAML or JSON consumer can carry are refused: NUL (a C string ends there, so the
    container runtime would cut the value) and lone UTF-16 surrogates (not encodable as UTF-8)."""
    if "\x00" in value:
        raise EvaplanError(
            f"{what} contains a NUL character", hint="remove it; a process environment cannot hold NUL"
        )
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise EvaplanError(f"{what} contains a lone UTF-16 surrogate", hint="pass valid UTF-8 text")
    return value


check_dns1123_label = _fullmatch_check(
    _DNS1123_LABEL,
    "a DNS-1123 label is at most 63 characters of a-z, 0-9 and '-', "
    "starting and ending with a letter or digit",
    "eva-8b-run1",
    max_len=DNS1123_LABEL_MAX,
)


check_dns1035_label = _fullmatch_check(
    _DNS1035_LABEL,
    "a DNS-1035 label is at most 63 characters of a-z, 0-9 and '-', "
    "starting with a letter and ending with a letter or digit",
    "eva-8b-run1",
    max_len=DNS1123_LABEL_MAX,
)


check_dns1123_subdomain = _fullmatch_check(
    _DNS1123_SUBDOMAIN,
    "a DNS-1123 subdomain is at most 253 characters of a-z, 0-9, '-' and '.', "
    "each dot-separated part starting and ending with a letter or digit",
    "s3-credentials",
    max_len=DNS1123_SUBDOMAIN_MAX,
)


check_label_value = _fullmatch_check(
    _LABEL_VALUE,
    "a label value is at most 63 characters of A-Z, a-z, 0-9, '-', '_' and '.', "
    "starting and ending with a letter or digit",
    "team-a-queue",
    max_len=LABEL_VALUE_MAX,
)


def check_qualified_name(value: str, what: str) -> str:
    """A resource or label key: `[prefix/]name`, prefix a DNS-1123 subdomain, name ≤ 63 characters."""
    prefix, _, name = value.rpartition("/")
    ok = bool(name) and len(name) <= 63 and _QUALIFIED_NAME_PART.fullmatch(name) is not None
    if prefix:
        ok = ok and len(prefix) <= DNS1123_SUBDOMAIN_MAX and _DNS1123_SUBDOMAIN.fullmatch(prefix) is not None
    if not ok:
        raise _refuse(
            what,
            value,
            "expected [prefix/]name with a DNS-1123 subdomain prefix and a name of "
            "letters, digits, '-', '_' and '.'",
            "rdma/rdma_shared_device_a",
        )
    return value


check_env_name = _fullmatch_check(
    _ENV_VAR_NAME,
    "an environment variable name is letters, digits, '_', '-' and '.', not starting with a digit",
    "NCCL_NET_GDR_LEVEL",
)


def check_image(value: str, what: str = "image") -> str:
    name = value.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last) + last.index(":")]
    if len(name) > IMAGE_NAME_MAX or not _IMAGE_REFERENCE.fullmatch(value):
        raise _refuse(
            what,
            value,
            "expected a container image reference [registry[:port]/]path[:tag][@digest] "
            "with a lower-case path",
            "ghcr.io/acme/evaclip:1.0",
        )
    return value


check_ifname_list = _fullmatch_check(
    _IFNAME_LIST,
    "expected network interface names or prefixes, comma-separated, "
    "optionally starting with ^ (exclude) or = (exact)",
    "eth0",
)


check_hca_list = _fullmatch_check(
    _HCA_LIST,
    "expected HCA names with optional :port, comma-separated, optionally "
    "starting with ^ (exclude) or = (exact)",
    "mlx5_0,mlx5_1",
)


_HOST_FOLDER = re.compile(r"(/[A-Za-z0-9._-]+)+")


def is_host_folder(value: object) -> bool:
    """An absolute path of plain names, not `/` itself and without `.`/`..` (a node folder to mount)."""
    return (
        isinstance(value, str)
        and bool(_HOST_FOLDER.fullmatch(value))
        and not ({".", ".."} & set(value.split("/")))
    )


def check_s3_uri(value: str, what: str) -> str:
    check_text(value, what)
    if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?", value):
        raise _refuse(
            what,
            value,
            "expected s3://bucket[/prefix] with a valid bucket name and no whitespace",
            "s3://my-bucket/eva-8b",
        )
    return value


def longest_pod_hostname(job_name: str, flavor: str, nodes: int) -> str:
    """The longest hostname the flavour's controller gives a pod of this job (launcher/flavours.py,
    one pattern per controller): it must stay a DNS-1123 label, so it bounds the job name's length."""
    from launcher.flavours import workload_by_flavor

    if flavor == "slurm":
        return job_name  # a Slurm job names no pods: the job name is the longest name it makes
    return workload_by_flavor(flavor).longest_pod_hostname(job_name, nodes)


def check_job_name(value: str, flavor: str, nodes: int) -> str:
    """A job name: a DNS-1035 label (it also names the headless Service, and Service names must
    start with a letter), short enough that every pod hostname derived from it is a DNS label."""
    check_dns1035_label(value, "job name")
    longest = longest_pod_hostname(value, flavor, nodes)
    if len(longest) > DNS1123_LABEL_MAX:
        spare = len(longest) - DNS1123_LABEL_MAX
        raise EvaplanError(
            f"job name {value!r} is too long for {nodes} nodes with --flavor {flavor}: pod hostname "
            f"{longest!r} has {len(longest)} characters, more than {DNS1123_LABEL_MAX}",
            hint=f"shorten the job name by at least {spare} characters",
        )
    return value
