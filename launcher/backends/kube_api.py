"""A small REST layer over the official `kubernetes` client: retries, clear errors, streams, watches.

The generated typed APIs do not cover CRDs (PyTorchJob, JobSet) and hide the raw paths we need
for server-side dry runs, `propagationPolicy` and streamed logs, so every call goes through
`ApiClient.param_serialize` + `call_api` (the client's own auth, TLS and proxy handling) with
JSON in and out. Faults the user can fix become one line (RBAC verb and resource on 401/403,
the missing operator on a CRD 404); transient ones (5xx, 429, dropped connections) are retried
with capped exponential backoff.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.errors import EvaplanError, RuntimeFailure

# Built-in kinds → (plural, namespaced). CRDs are looked up by API discovery instead.
BUILTIN_KINDS: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "Service"): ("services", True),
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Secret"): ("secrets", True),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("v1", "PersistentVolumeClaim"): ("persistentvolumeclaims", True),
    ("v1", "Pod"): ("pods", True),
    ("v1", "Node"): ("nodes", False),
    ("v1", "Namespace"): ("namespaces", False),
    ("batch/v1", "Job"): ("jobs", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("policy/v1", "PodDisruptionBudget"): ("poddisruptionbudgets", True),
    ("scheduling.k8s.io/v1", "PriorityClass"): ("priorityclasses", False),
    ("rbac.authorization.k8s.io/v1", "Role"): ("roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("rolebindings", True),
}

# CRD groups whose absence means an operator is missing, and what to use instead.
OPERATORS: dict[str, tuple[str, str]] = {
    "kubeflow.org": (
        "the Kubeflow training-operator",
        "install it (kubectl apply --server-side -k github.com/kubeflow/training-operator/manifests/overlays/standalone) "
        "or render the indexed-job flavour, which needs nothing installed",
    ),
    "jobset.x-k8s.io": (
        "the JobSet controller",
        "install it (kubectl apply --server-side -f https://github.com/kubernetes-sigs/jobset/releases/latest/download/manifests.yaml) "
        "or render the indexed-job flavour, which needs nothing installed",
    ),
    "scheduling.x-k8s.io": (
        "the scheduler-plugins coscheduling plugin",
        "install it or render without gang scheduling",
    ),
    "kueue.x-k8s.io": ("Kueue", "install Kueue or render without a queue"),
}

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Statuses whose Retry-After header the server means (RFC 9110 §10.2.3: 503 and 429, RFC 6585 §4).
RETRY_AFTER_STATUSES = frozenset({429, 503})
# Client timeouts, an evaplan choice: a TCP connect to a live API server takes milliseconds even
# across regions, and kube-apiserver answers a GET/LIST within its own 60 s request timeout
# (--request-timeout default 1m0s), so a request that waits longer is on a hung server.
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
# The most one call may take, retries and Retry-After waits included: the stated bound on how long
# `status` or `list` wait for a hung or failing API server before they say so (docs/kubernetes.md).
CALL_BUDGET_S = 60.0
# A Retry-After longer than this is not waited for (the call gives up and says when to retry).
MAX_RETRY_AFTER_S = 60.0
# Clusters (kubeconfig, context) that failed a whole call budget in this process: later calls fail
# fast instead of waiting another budget each (`list` over many jobs on one dead cluster).
# The mark lasts one call budget, so a watch that retries later asks the server again.
_UNREACHABLE: dict[tuple[str | None, str | None], tuple[str, float]] = {}


class ApiError(RuntimeFailure):
    """An API call that failed for a reason other than the user's input (exit 1)."""

    def __init__(self, message: str, *, status: int = 0, hint: str | None = None) -> None:
        self.status = status
        super().__init__(message, hint=hint)


class Forbidden(EvaplanError):
    """401/403: the credentials lack an RBAC verb (exit 2: the user or their admin can fix it)."""


class Unreachable(ApiError):
    """The API server did not answer within the call budget."""


class NotFound(ApiError):
    """404 on a path."""


class Conflict(ApiError):
    """409: the object exists already."""


class OperatorMissing(EvaplanError):
    """A CRD kind the cluster does not serve (exit 2: choose another flavour or install it)."""


@dataclass(frozen=True)
class Backoff:
    """Retry schedule: delay_n = min(cap, base · 2^n) · U(0.5, 1) (full-jitter variant, AWS
    Architecture blog "Exponential Backoff And Jitter"); `attempts` includes the first call."""

    attempts: int = 6
    base_s: float = 0.5
    cap_s: float = 8.0

    def delays(self) -> Iterator[float]:
        for n in range(self.attempts - 1):
            yield min(self.cap_s, self.base_s * 2**n) * random.uniform(0.5, 1.0)


DEFAULT_BACKOFF = Backoff()


@dataclass(frozen=True)
class ResourceRef:
    api_version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def group(self) -> str:
        return self.api_version.split("/")[0] if "/" in self.api_version else ""

    def path(self, namespace: str | None, name: str | None = None) -> str:
        base = f"/api/{self.api_version}" if not self.group else f"/apis/{self.api_version}"
        if self.namespaced:
            if not namespace:
                raise EvaplanError(
                    f"{self.kind} is namespaced but no namespace was given", hint="pass -n NAMESPACE"
                )
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base

    @property
    def rbac_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _verb(method: str, query: dict[str, Any] | None, name: bool) -> str:
    if method == "GET":
        if query and str(query.get("watch", "")).lower() == "true":
            return "watch"
        return "get" if name else "list"
    return {"POST": "create", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}.get(
        method, method.lower()
    )


def _kubeconfig_problem(e: Exception) -> str:
    """What is wrong with a kubeconfig the client refused, in one line."""
    import yaml

    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        return f"not valid YAML: {e.problem} at line {mark.line + 1}, column {mark.column + 1}"
    if isinstance(e, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(e, TypeError | AttributeError):
        return "not a kubeconfig (a YAML mapping of clusters, contexts and users)"
    return " ".join(str(e).split())


class KubeApi:
    """Synchronous JSON access to one cluster, namespace-aware, with retries."""

    def __init__(
        self,
        kubeconfig: str | None = None,
        context: str | None = None,
        namespace: str | None = None,
        backoff: Backoff | None = None,
        request_timeout_s: float | None = None,
        call_budget_s: float | None = None,
    ) -> None:
        try:
            import yaml
            from kubernetes import client, config
            from kubernetes.config.config_exception import ConfigException
        except ImportError as e:  # pragma: no cover - core dependency
            raise EvaplanError(
                "the kubernetes client is not installed", hint="pip install 'kubernetes>=29'"
            ) from e
        self.backoff = backoff or DEFAULT_BACKOFF
        self.request_timeout_s = request_timeout_s if request_timeout_s is not None else READ_TIMEOUT_S
        self.call_budget_s = call_budget_s if call_budget_s is not None else CALL_BUDGET_S
        self.kubeconfig = kubeconfig  # as given (None: $KUBECONFIG or ~/.kube/config, or in-cluster)
        self._cluster_key = (kubeconfig, context)
        cfg = client.Configuration()
        try:
            if kubeconfig or context or not _in_cluster():
                config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
                self.namespace = namespace or _context_namespace(kubeconfig, context) or "default"
                # The context as resolved now (the current one when none was given): a job
                # records it, so that a later `kubectl config use-context` does not move it.
                self.context: str | None = context or _current_context(kubeconfig)
                self.where = f"context {self.context or '?'}"
            else:
                config.load_incluster_config(client_configuration=cfg)
                self.namespace = namespace or _incluster_namespace() or "default"
                self.context = None
                self.where = "in-cluster config"
        except (ConfigException, OSError, TypeError, AttributeError, ValueError, yaml.YAMLError) as e:
            # ValueError: not UTF-8; YAMLError: a syntax error; TypeError/AttributeError: YAML that is
            # not a mapping (the client indexes into it).
            raise EvaplanError(
                f"cannot load Kubernetes config ({kubeconfig or '$KUBECONFIG or ~/.kube/config'}): "
                + _kubeconfig_problem(e),
                hint="pass --kubeconfig PATH / --context NAME, or run inside a cluster",
            ) from e
        cfg.retries = 0  # retries are ours (below), with backoff and a clear last error
        self.server: str = str(cfg.host).rstrip("/")  # the API server's URL, as the job record keeps it
        self._client = client.ApiClient(cfg)
        self._discovery: dict[str, dict[str, tuple[str, bool]]] = {}

    # ------------------------------------------------------------------ raw requests
    def _send(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None,
        body: Any,
        stream: bool,
        timeout_s: float | None,
    ) -> Any:
        q = [
            (k, str(v).lower() if isinstance(v, bool) else v)
            for k, v in (query or {}).items()
            if v is not None
        ]
        headers = {"Accept": "application/json, */*", "Content-Type": "application/json"}
        _, url, headers, body, post = self._client.param_serialize(
            method, path, query_params=q, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        # (connect, read): urllib3 applies the read timeout to each socket read, so a stream that
        # sends nothing for that long fails; `timeout_s=None` with `stream` means no read timeout.
        read = timeout_s if timeout_s is not None else (None if stream else self.request_timeout_s)
        timeout = (CONNECT_TIMEOUT_S, read)
        return self._client.call_api(method, url, headers, body, post, _request_timeout=timeout).response

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        stream: bool = False,
        timeout_s: float | None = None,
        ref: ResourceRef | None = None,
    ) -> Any:
        """One call with retries. JSON-decoded body, or the open response when `stream`.

        Transient failures (5xx, 429, dropped or refused connections, read timeouts) are retried with
        backoff, waiting at least the server's Retry-After; the whole call, waits included, ends
        within `call_budget_s`."""
        import urllib3

        down = _UNREACHABLE.get(self._cluster_key)
        if down is not None and time.monotonic() < down[1]:
            raise Unreachable(down[0], hint=f"is the API server of {self.where} reachable?")
        delays = self.backoff.delays()
        deadline = time.monotonic() + self.call_budget_s
        retried = False
        attempts = 0
        while True:
            remaining = deadline - time.monotonic()
            attempts += 1
            try:
                per_try = timeout_s
                if not stream or timeout_s is not None:
                    per_try = max(0.1, min(timeout_s or self.request_timeout_s, remaining))
                resp = self._send(method, path, query, body, stream, per_try)
            except (urllib3.exceptions.HTTPError, ConnectionError, OSError) as e:
                retried = True
                delay = next(delays, None)
                if delay is None or time.monotonic() + delay >= deadline:
                    line = (
                        f"{method} {path}: connection failed after {attempts} attempts "
                        f"within {self.call_budget_s:.0f}s: {_short(e)}"
                    )
                    if time.monotonic() + (delay or 0.0) >= deadline:
                        # The whole budget went on a silent server: later calls fail fast.
                        _UNREACHABLE[self._cluster_key] = (line, time.monotonic() + self.call_budget_s)
                    raise Unreachable(line, hint=f"is the API server of {self.where} reachable?") from e
                time.sleep(delay)
                continue
            if resp.status < 400:
                if stream:
                    return resp
                data = read_body(resp, deadline, f"{method} {path}")
                resp.release_conn()
                if not data:
                    return {}
                try:
                    return json.loads(data)
                except json.JSONDecodeError:
                    return data.decode(errors="replace")
            payload = read_body(resp, deadline, f"{method} {path}")
            retry_after = _retry_after_s(resp) if resp.status in RETRY_AFTER_STATUSES else None
            resp.release_conn()
            if resp.status in RETRY_STATUSES:
                retried = True
                delay = next(delays, None)
                if delay is not None:
                    if retry_after is not None:
                        delay = max(delay, retry_after)
                    if delay <= MAX_RETRY_AFTER_S and time.monotonic() + delay < deadline:
                        time.sleep(delay)
                        continue
                if retry_after is not None:
                    raise ApiError(
                        f"{method} {path}: HTTP {resp.status} after {attempts} attempts; the server asks to "
                        f"retry after {retry_after:.0f}s",
                        status=resp.status,
                        hint="the API server is overloaded; try again later",
                    )
            if resp.status == 409 and method == "POST" and retried and isinstance(body, dict):
                # An earlier attempt reached the server before the 5xx or the dropped connection
                # (the pre-launch check found no such object): that create succeeded.
                return self.request("GET", f"{path}/{body['metadata']['name']}", ref=ref)
            raise self._error(method, path, query, resp.status, payload, ref)

    def _error(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None,
        status: int,
        payload: bytes,
        ref: ResourceRef | None,
    ) -> Exception:
        try:
            message = json.loads(payload).get("message", "")
        except (json.JSONDecodeError, AttributeError):
            message = payload.decode(errors="replace")[:300]
        message = (message or "").strip().splitlines()[0] if message else ""
        ns = f" in namespace {self.namespace}" if "/namespaces/" in path else ""
        if status in (401, 403):
            verb = _verb(method, query, bool(ref and not path.rstrip("/").endswith("/" + ref.plural)))
            resource = ref.rbac_resource if ref else path
            what = "unauthenticated (401)" if status == 401 else "forbidden (403)"
            hint = (
                f"your credentials ({self.where}) need RBAC verb '{verb}' on '{resource}'{ns}: "
                f"check with `kubectl auth can-i {verb} {resource}{' -n ' + self.namespace if ns else ''}`"
            )
            if status == 401:
                hint = f"the token of {self.where} is missing or expired; refresh your kubeconfig credentials"
            return Forbidden(f"{what} on {method} {path}: {message}", hint=hint)
        if status == 404:
            if ref is not None and ref.group in OPERATORS and path.rstrip("/").endswith(ref.plural):
                return operator_missing(ref, self.where)
            return NotFound(f"{method} {path}: not found ({message})", status=404)
        if status == 409:
            return Conflict(f"{method} {path}: already exists ({message})", status=409)
        if status in (400, 422):
            return EvaplanError(
                f"the API server rejected {method} {path} ({status}): {message}",
                hint="the rendered manifest is invalid for this cluster; re-render or report it",
            )
        return ApiError(
            f"{method} {path}: HTTP {status}: {message}",
            status=status,
            hint="retried with backoff; the API server may be overloaded"
            if status in RETRY_STATUSES
            else None,
        )

    # ------------------------------------------------------------------ resources
    def resource(self, api_version: str, kind: str) -> ResourceRef:
        """Plural and scope of a kind: the built-in table, else API discovery (CRDs)."""
        known = BUILTIN_KINDS.get((api_version, kind))
        if known:
            return ResourceRef(api_version, kind, *known)
        if api_version not in self._discovery:
            base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            try:
                listing = self.request("GET", base)
            except NotFound:
                listing = {"resources": []}
            self._discovery[api_version] = {
                r["kind"]: (r["name"], bool(r.get("namespaced", True)))
                for r in listing.get("resources", [])
                if "/" not in r.get("name", "")
            }
        found = self._discovery[api_version].get(kind)
        group = api_version.split("/")[0] if "/" in api_version else ""
        if found is None:
            ref = ResourceRef(api_version, kind, kind.lower() + "s", True)
            if group in OPERATORS:
                raise operator_missing(ref, self.where)
            raise OperatorMissing(
                f"the cluster ({self.where}) does not serve {kind} ({api_version})",
                hint="install the CRD and its controller, or render another flavour",
            )
        return ResourceRef(api_version, kind, *found)

    def ref_of(self, obj: dict[str, Any]) -> ResourceRef:
        return self.resource(obj["apiVersion"], obj["kind"])

    def ns_of(self, obj: dict[str, Any]) -> str:
        return obj.get("metadata", {}).get("namespace") or self.namespace

    def get(self, ref: ResourceRef, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            return self.request("GET", ref.path(namespace or self.namespace, name), ref=ref)
        except NotFound:
            return None

    def list(
        self,
        ref: ResourceRef,
        namespace: str | None = None,
        label_selector: str | None = None,
        all_namespaces: bool = False,
    ) -> list[dict[str, Any]]:
        if all_namespaces or not ref.namespaced:
            root = f"/apis/{ref.api_version}" if ref.group else f"/api/{ref.api_version}"
            path = f"{root}/{ref.plural}"
        else:
            path = ref.path(namespace or self.namespace)
        data = self.request("GET", path, query={"labelSelector": label_selector}, ref=ref)
        return list(data.get("items", []))

    def create(self, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        ref = self.ref_of(obj)
        query = {"dryRun": "All"} if dry_run else None
        return self.request("POST", ref.path(self.ns_of(obj)), query=query, body=obj, ref=ref)

    def delete(
        self, ref: ResourceRef, name: str, namespace: str | None = None, propagation: str = "Foreground"
    ) -> bool:
        """Delete with `propagationPolicy` (Foreground: dependents, i.e. pods, go first)."""
        try:
            self.request(
                "DELETE",
                ref.path(namespace or self.namespace, name),
                ref=ref,
                query={"propagationPolicy": propagation},
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation},
            )
        except NotFound:
            return False
        return True

    def stream_lines(
        self, path: str, query: dict[str, Any], timeout_s: float | None = None, total_s: float | None = None
    ) -> Iterator[str]:
        """Lines of a streamed response (pod logs, watches), one at a time: never the whole body.
        With `total_s`, the whole stream ends within that many seconds (Unreachable after it)."""
        deadline = time.monotonic() + total_s if total_s is not None else None
        resp = self.request("GET", path, query=query, stream=True, timeout_s=timeout_s)
        try:
            if deadline is None:
                yield from iter_lines(resp)
            else:
                yield from split_lines(chunks_by(resp, deadline, f"GET {path}"))
        finally:
            resp.release_conn()

    def watch(
        self,
        ref: ResourceRef,
        namespace: str | None,
        *,
        resource_version: str | None = None,
        read_timeout_s: float = 60.0,
        stop: threading.Event | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Watch events until `stop` is set, resuming from the last resourceVersion after a
        disconnect, and relisting on 410 Gone (the API server compacted that version). A quiet
        stream is re-opened every `read_timeout_s`, which is also how often `stop` is checked."""
        import urllib3

        rv = resource_version
        delays: Iterator[float] = iter(())
        stop = stop or threading.Event()
        while not stop.is_set():
            query = {"watch": "true", "allowWatchBookmarks": "true", "resourceVersion": rv}
            try:
                for line in self.stream_lines(
                    ref.path(namespace or self.namespace), query, timeout_s=read_timeout_s
                ):
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object", {})
                    if event.get("type") == "ERROR":
                        if obj.get("code") == 410:
                            rv = None  # expired: start over from a fresh list
                            break
                        raise ApiError(f"watch {ref.plural}: {obj.get('message')}", status=obj.get("code", 0))
                    new_rv = obj.get("metadata", {}).get("resourceVersion")
                    if new_rv and new_rv != "...":
                        rv = new_rv
                    delays = self.backoff.delays()  # healthy again: reset the schedule
                    if event.get("type") != "BOOKMARK":
                        yield event
                    if stop.is_set():
                        return
            except (urllib3.exceptions.HTTPError, ConnectionError, ApiError) as e:
                if (
                    isinstance(e, ApiError)
                    and not isinstance(e, NotFound)
                    and e.status not in RETRY_STATUSES | {0}
                ):
                    raise
            delay = next(delays, None)
            stop.wait(delay if delay is not None else self.backoff.base_s)


def read_body(resp: Any, deadline: float, what: str) -> bytes:
    """The whole response body, by `deadline` (time.monotonic()) at the latest."""
    return b"".join(chunks_by(resp, deadline, what))


def chunks_by(resp: Any, deadline: float, what: str) -> Iterator[bytes]:
    """A response body's chunks as they arrive, all of them by `deadline` (time.monotonic()).

    urllib3's read timeout bounds each socket read, not the body: a server that trickles a byte
    every few seconds would hold a call forever. So the body is read one socket read at a time
    (read1), each allowed only the time left."""
    import urllib3

    conn = getattr(resp, "connection", None)
    sock = getattr(conn, "sock", None)
    got = 0

    def late() -> Unreachable:
        resp.release_conn()
        return Unreachable(
            f"{what}: the reply's body did not arrive within the call budget ({got} bytes so far)",
            hint="the API server (or a proxy before it) is too slow; retry later",
        )

    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise late()
        if sock is not None:
            sock.settimeout(left)
        try:
            chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            if time.monotonic() >= deadline:
                raise late() from None
            resp.release_conn()
            raise Unreachable(
                f"{what}: the reply broke off after {got} bytes: {_short(e)}",
                hint="is the API server reachable? retry later",
            ) from None
        if not chunk:
            return
        got += len(chunk)
        yield chunk


def _short(e: BaseException) -> str:
    """One line for a connection error (urllib3's are long and nested)."""
    text = str(getattr(e, "reason", None) or e)
    return text.splitlines()[0][:200] if text else type(e).__name__


def _retry_after_s(resp: Any) -> float | None:
    """Retry-After in seconds (RFC 9110 §10.2.3: delay-seconds or an HTTP-date), None if absent."""
    value = (resp.headers or {}).get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    from datetime import datetime, timezone

    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def iter_lines(resp: Any, chunk_bytes: int = 65536) -> Iterator[str]:
    """Split a streamed urllib3 response into text lines, holding at most one partial line."""
    return split_lines(resp.stream(chunk_bytes, decode_content=True))


def split_lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """Text lines from chunks of bytes, holding at most one partial line."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield line.decode(errors="replace").rstrip("\r")
    if buf:
        yield buf.decode(errors="replace").rstrip("\r")


def operator_missing(ref: ResourceRef, where: str) -> OperatorMissing:
    operator, fix = OPERATORS.get(ref.group, ("its operator", "install it or render another flavour"))
    return OperatorMissing(
        f"the cluster ({where}) does not serve {ref.kind} ({ref.api_version}): {operator} is not installed",
        hint=fix,
    )


def _in_cluster() -> bool:
    import os

    return (
        bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        and Path("/var/run/secrets/kubernetes.io/serviceaccount/token").is_file()
    )


def _incluster_namespace() -> str | None:
    p = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return p.read_text().strip() if p.is_file() else None


def _kubeconfig_contexts(kubeconfig: str | None) -> tuple[list[dict[str, Any]], str | None]:
    from kubernetes import config

    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except Exception:
        return [], None
    return contexts, (active or {}).get("name")


def _current_context(kubeconfig: str | None) -> str | None:
    return _kubeconfig_contexts(kubeconfig)[1]


def _context_namespace(kubeconfig: str | None, context: str | None) -> str | None:
    """The namespace kubectl would use: the context's `namespace`, as `kubectl config set-context --namespace`."""
    contexts, active = _kubeconfig_contexts(kubeconfig)
    name = context or active
    for c in contexts:
        if c.get("name") == name:
            return (c.get("context") or {}).get("namespace")
    return None


def one_line(e: BaseException) -> str:
    """An error in one line of at most 200 characters, for a message that goes on after it."""
    text = e.line() if isinstance(e, EvaplanError) else (str(e) or type(e).__name__)
    return text.splitlines()[0][:200] if text else type(e).__name__
