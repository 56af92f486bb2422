"""Fixtures for the launcher tests: a kmock Kubernetes API in a background thread, a kubeconfig
pointing at it, a job store in a tmp dir, and real bundles from the renderer."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

kmock = pytest.importorskip("kmock")
aiohttp_web = pytest.importorskip("aiohttp.web")

NAMESPACE = "ml"
REPO = Path(__file__).resolve().parents[2]


class DryRunAwareEmulator(kmock.KubernetesEmulator):
    """kmock persists every create; a real API server persists nothing for `?dryRun=All`.
    `before` (a coroutine function of the request), when set, runs before each request is served:
    how a test makes a call slow until something else has happened (API latency, races)."""

    before: Callable[[Any], Awaitable[None]] | None = None

    async def _handle(self, request: Any) -> Any:
        if self.before is not None:
            await self.before(request)
        if request.params.get("dryRun") == "All" and request.action == kmock.action.CREATE:
            return aiohttp_web.json_response(request.data, status=201)
        return await super()._handle(request)


# Waits on the in-process server's loop return in milliseconds; the bound only keeps a wedged loop
# from hanging the suite, sized for a 2-core machine at load 8 (not a speed check).
LOOP_WAIT_S = 300.0


class Cluster:
    """A kmock server on 127.0.0.1 served by its own event loop thread; `do` runs code there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run_loop, daemon=True, name="kmock")
        self.thread.start()
        self.handler: Any = None
        self._stop: asyncio.Event | None = None
        started: Future[None] = Future()
        self._done = asyncio.run_coroutine_threadsafe(self._serve(started), self.loop)
        started.result(timeout=LOOP_WAIT_S)

    def _run_loop(self) -> None:
        # Signals go to the main thread (the CLI under test), as in a real `evaplan` process: the
        # kernel interrupts its blocking socket read only if no other thread takes the signal.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        self.loop.run_forever()

    async def _serve(self, started: Future[None]) -> None:
        self._stop = asyncio.Event()
        async with DryRunAwareEmulator() as handler, kmock.Server(handler) as server:
            self.handler = handler
            self.url = str(server.url).rstrip("/")
            for res, kind, namespaced in (
                ("v1/pods", "Pod", True),
                ("v1/nodes", "Node", False),
                ("v1/services", "Service", True),
                ("v1/configmaps", "ConfigMap", True),
                ("batch/v1/jobs", "Job", True),
            ):
                handler.resources[res] = kmock.ResourceInfo(kind=kind, namespaced=namespaced)
            started.set_result(None)
            await self._stop.wait()

    def do(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the server's loop (kmock's DSL and object store are not thread-safe)."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=LOOP_WAIT_S)

    def close(self) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._done.result(timeout=LOOP_WAIT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    # ---------------------------------------------------------------- playing the controller
    def put(self, resource: str, namespace: str | None, name: str, obj: dict[str, Any]) -> None:
        self.do(lambda: self.handler.objects.__setitem__((kmock.resource(resource), namespace, name), obj))

    def objects(self, resource: str) -> dict[tuple[str | None, str], dict[str, Any]]:
        def read() -> dict[tuple[str | None, str], dict[str, Any]]:
            out = {}
            for (res, ns, name), obj in self.handler.objects.items():
                if res == kmock.resource(resource) and not obj.deleted:
                    out[(ns, name)] = obj.raw
            return out

        return self.do(read)

    def requests(self, method: str, path_prefix: str) -> list[Any]:
        return self.do(
            lambda: [
                r
                for r in self.handler._requests
                if r.method.value == method.upper() and r.url.path.startswith(path_prefix)
            ]
        )

    def add_gpu_node(self, name: str, gpus: int, product: str = "NVIDIA-H100-80GB-HBM3") -> None:
        self.put(
            "v1/nodes",
            None,
            name,
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {"nvidia.com/gpu.product": product, "nvidia.com/gpu.count": str(gpus)},
                },
                "status": {"allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "192", "memory": "2000Gi"}},
            },
        )


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "state"
    monkeypatch.setenv("EVAPLAN_STATE_DIR", str(d))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    return d


@pytest.fixture
def kubeconfig(cluster: Cluster, tmp_path: Path) -> Path:
    p = tmp_path / "kubeconfig.yaml"
    p.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "kmock",
                "clusters": [{"name": "kmock", "cluster": {"server": cluster.url}}],
                "users": [{"name": "tester", "user": {"token": "test-token"}}],
                "contexts": [
                    {
                        "name": "kmock",
                        "context": {"cluster": "kmock", "user": "tester", "namespace": NAMESPACE},
                    }
                ],
            }
        )
    )
    return p


@pytest.fixture
def bundle_factory() -> Callable[..., Path]:
    """make_bundle(dest, job_name=..., flavor=..., nodes=...) → a rendered bundle folder."""
    return make_bundle


def resign_bundle(bundle: Path) -> None:
    """What only the holder of the job store's key can do (launcher/bundle_key.py): list the bundle's
    files as they are now and sign bundle.json, so that checks behind the signature can be reached."""
    import hashlib

    from launcher import bundle_key

    meta = json.loads((bundle / "bundle.json").read_text())
    meta["file_sha256"] = {
        n: hashlib.sha256((bundle / n).read_bytes()).hexdigest() for n in meta["file_sha256"]
    }
    (bundle / "bundle.json").write_text(json.dumps(bundle_key.sign(meta)))


@pytest.fixture
def resign() -> Callable[[Path], None]:
    """resign(bundle_dir): re-sign an edited bundle with this job store's key."""
    return resign_bundle


@pytest.fixture
def cpu_hardware(tmp_path: Path) -> list[str]:
    """A user profile folder with `cpu-2`: a 2-rank CPU host (gloo), for local-backend bundles."""
    return write_cpu_profiles(tmp_path / "profiles")


def write_cpu_profiles(root: Path) -> list[str]:
    """`cpu-2` (a 2-rank CPU host, gloo) and its priced offering `cpu-test` in a profile folder."""
    (root / "hardware").mkdir(parents=True)
    text = (REPO / "profiles" / "hardware" / "h100-sxm.yaml").read_text()
    text = (
        text.replace("name: h100-sxm", "name: cpu-2")
        .replace("vendor: nvidia", "vendor: cpu")
        .replace("collectives: nccl", "collectives: gloo")
        .replace("gpus_per_node: 8", "gpus_per_node: 2")
    )
    (root / "hardware" / "cpu-2.yaml").write_text(text)
    # A priced offering of it: $3.60/node-hour = $0.001 per node-second, so local cost is not $0.
    (root / "offerings").mkdir()
    offering = (REPO / "profiles" / "offerings" / "lambda-h100.yaml").read_text()
    offering = re.sub(r"(?m)^name: .*$", "name: cpu-test", offering)
    offering = re.sub(r"(?m)^hardware: .*$", "hardware: cpu-2", offering)
    offering = re.sub(r"(?m)^gpus_per_node: .*$", "gpus_per_node: 2", offering)
    offering = re.sub(
        r"(?m)^on_demand_usd_per_node_hour: \{value: [0-9.]+",
        "on_demand_usd_per_node_hour: {value: 3.6",
        offering,
    )
    (root / "offerings" / "cpu-test.yaml").write_text(offering)
    return [str(root)]


@pytest.fixture
def cpu_bundle(
    tmp_path: Path, bundle_factory: Callable[..., Path], cpu_hardware: list[str]
) -> Callable[..., Path]:
    """cpu_bundle(job, steps, **more): a one-node bundle for the 2-rank `cpu-2` host at cpu-test prices."""

    def make(job_name: str = "eva-sup", total_steps: int = 10_000, **more: Any) -> Path:
        return bundle_factory(
            tmp_path / f"bundle-{job_name}-{total_steps}",
            job_name=job_name,
            nodes=1,
            hardware="cpu-2",
            total_steps=total_steps,
            offering="cpu-test",
            profile_dirs=cpu_hardware,
            **more,
        )

    return make


def make_bundle(
    dest: Path,
    *,
    job_name: str = "eva-test",
    flavor: str = "indexed-job",
    nodes: int = 2,
    hardware: str = "h100-sxm",
    offering: str | None = "aws-p5",
    total_steps: int = 100,
    profile_dirs: list[str] | None = None,
    offload: str | None = None,
    options: dict[str, Any] | None = None,
    **render_kw: Any,
) -> Path:
    """A real bundle: the planner's estimate for eva-clip-debug on `nodes` nodes, rendered and written
    (`offload`: the optimizer's offload device; `options` or keywords: more RenderOptions, e.g. env)."""
    from launcher.bundle import write_bundle
    from launcher.render import RenderOptions, inputs_from_estimate, render
    from planner.choose import Request, choose
    from planner.profiles import load_hardware, load_model, load_offering

    dirs = profile_dirs or []
    model = load_model("eva-clip-debug", dirs)
    hw = load_hardware(hardware, dirs)
    batch = 2 * nodes * hw.gpus_per_node
    est = choose(
        model,
        hw,
        Request(
            nodes=nodes,
            samples=total_steps * batch,
            global_batch=batch,
            micro_batch=2,
            grad_accum=1,
            zero_stage=1 if offload is None else 3,
            offload_optimizer=offload,
        ),
        load_offering(offering, dirs) if offering else None,
    )
    assert est.fits, est.verdict
    rendered = render(
        inputs_from_estimate(est, dirs),
        RenderOptions(
            job_name=job_name,
            image="ghcr.io/acme/evaclip:1.0",
            flavor=flavor,
            namespace=NAMESPACE,
            **(options or {}),
            **render_kw,
        ),
    )
    return write_bundle(rendered, dest)


# ------------------------------------------------------------------ a real Slurm (tests/launcher/slurm_cluster.py)
@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real one-node Slurm cluster (munged, slurmctld, slurmd as root on 127.0.0.1) for every
    slurm test of the session; skipped, with the reason, without the packages or root."""
    import importlib.util

    # --import-mode=importlib puts no test folder on sys.path: load the helper by its path.
    spec = importlib.util.spec_from_file_location(
        "evaplan_slurm_cluster", Path(__file__).with_name("slurm_cluster.py")
    )
    assert spec is not None and spec.loader is not None
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)
    reason = helper.missing_reason()
    if reason:
        pytest.skip(reason)
    cluster = helper.SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def slurm(slurm_cluster: Any, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The session's Slurm cluster for one test: its clients configured, and whatever the test left
    queued or running cancelled afterwards so the next test finds the node free."""
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    yield slurm_cluster
    slurm_cluster.cancel_all()
