"""Every user string renders as its exact literal in valid YAML, or is refused with one line."""

from __future__ import annotations

import pytest
import yaml

from launcher import names
from launcher.backends.kube_pods import pod_templates
from launcher.render import RenderOptions, render
from launcher.templating import yaml_tojson
from planner.errors import EvaplanError

TRICKY_VALUES = [
    'say "hi"',
    "it's",
    "a\nb\r\nc\td",
    "{{ secret }}",
    "{% raw %}",
    "&anchor",
    "*alias",
    "<<: *base",
    "- item",
    "key: value",
    "# not a comment",
    "null",
    "~",
    "yes",
    "0x1F",
    "1e3",
    "0o17",
    "@at",
    "`tick`",
    "%YAML 1.2",
    "---",
    "...",
    "ünïcødé",
    "日本語",
    "emoji 😀🚀",
    "\u2028line\u2029para",
    "nel\x85",
    "bom\ufeff",
    "c1 \x9b",
    "del\x7f",
    "back\\slash",
    "trailing space ",
    " leading",
    "",
    "$(HOME)",
    "${HOME}",
]


def _container(rendered) -> dict:
    docs = list(yaml.safe_load_all(rendered.files["manifests.yaml"]))
    return pod_templates(docs[-1])[0][0]["spec"]["containers"][0]


@pytest.mark.parametrize("value", TRICKY_VALUES)
def test_scalar_round_trips_through_yaml(value):
    assert yaml.safe_load(f"x: {yaml_tojson(value)}\n") == {"x": value}


def test_env_values_render_literally(make_inputs, make_options, validate_object):
    env = tuple((f"V{i}", v) for i, v in enumerate(TRICKY_VALUES))
    r = render(make_inputs(), make_options(flavor="jobset", env=env))
    got = {e["name"]: e["value"] for e in _container(r)["env"] if "value" in e}
    for k, v in env:
        assert got[k] == v
    for d in yaml.safe_load_all(r.files["manifests.yaml"]):
        validate_object(d)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("job_name", "Eva8B", "DNS-1035"),
        ("job_name", "8b-run", "DNS-1035"),
        ("job_name", "eva_8b", "DNS-1035"),
        ("job_name", "eva\n8b", "DNS-1035"),
        ("job_name", "{{ x }}", "DNS-1035"),
        ("job_name", "x" * 64, "DNS-1035"),
        ("namespace", "ML", "DNS-1123 label"),
        ("namespace", "&anchor", "DNS-1123 label"),
        ("image", "ghcr.io/acme/evaclip:1.0\nkind: Secret", "image reference"),
        ("image", 'acme/eva"clip', "image reference"),
        ("image", "acme/EvaClip:1.0", "image reference"),
        ("image", "{{ image }}", "image reference"),
        ("image", "*alias", "image reference"),
        ("image", "acme/évaclip", "image reference"),
        ("image", "acme/evaclip:", "image reference"),
        ("s3_secret", "S3 creds", "DNS-1123 subdomain"),
        ("priority_class", "high\npriority", "DNS-1123 subdomain"),
        ("queue", "team a", "label value"),
        ("queue", "x" * 64, "label value"),
        ("rdma_resource", "rdma/", "prefix/"),
        ("socket_ifname", "eth0; rm -rf /", "interface"),
        ("ib_hca", "mlx5_0 mlx5_1", "HCA"),
        ("checkpoint_s3_uri", "https://bucket/x", "s3://"),
        ("checkpoint_s3_uri", "s3://b/x y", "s3://"),
        ("data_url", "relative/shards", "absolute path"),
        ("nvme_host_path", "/nvme/../etc", "absolute path"),
        ("rbac_subject", "Robot:me", "Kind:name"),
    ],
)
def test_bad_strings_are_refused_with_one_line(field, value, message, make_options):
    with pytest.raises(EvaplanError, match=message) as e:
        opts = make_options(**{field: value})
        if field == "job_name":
            names.check_job_name(opts.job_name, opts.flavor, 4)
    line = e.value.line()
    assert "\n" not in line.replace(repr(value), "") and line.startswith(("--", "job name", "image"))


@pytest.mark.parametrize(
    ("key", "value"), [("BAD NAME", "x"), ("1ABC", "x"), ("OK", "nul\x00"), ("OK", "\ud800")]
)
def test_bad_env_is_refused(key, value, make_options):
    with pytest.raises(EvaplanError, match="--env"):
        make_options(env=((key, value),))


def test_good_images_are_kept():
    for image in (
        "evaclip",
        "acme/evaclip:1.0",
        "localhost:5000/acme/evaclip:dev-1",
        "ghcr.io/acme/eva-clip_x/train:2026.11",
        "registry.example.com/a/b@sha256:" + "a" * 64,
        "[::1]:5000/evaclip:1",
    ):
        assert names.check_image(image) == image


def test_job_name_length_bounded_by_pod_hostnames():
    name = "a" * 61
    names.check_job_name(name, "indexed-job", 10)  # a...a-9: 63 characters
    with pytest.raises(EvaplanError, match=r"pod hostname 'a{61}-10' has 64 characters"):
        names.check_job_name(name, "indexed-job", 11)
    with pytest.raises(EvaplanError, match="shorten the job name by at least 7"):
        names.check_job_name(name, "jobset", 4)  # a...a-node-0-3: 70 characters
    assert names.longest_pod_hostname("j", "pytorchjob", 3) == "j-worker-1"
    assert names.longest_pod_hostname("j", "pytorchjob", 1) == "j-master-0"


def test_render_refuses_a_too_long_name(make_inputs, make_options):
    opts = make_options(job_name="a" * 62)
    with pytest.raises(EvaplanError, match="too long for 4 nodes"):
        render(make_inputs(), opts)


def test_options_forbid_unknown_keys():
    with pytest.raises(Exception, match="extra"):
        RenderOptions(job_name="a", image="b", imagee="c")
