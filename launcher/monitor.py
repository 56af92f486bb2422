"""Progress, ETA, dollars and the budget guard: what `status`, `list` and `watch` show.

Cost model (docs/launcher.md, "Dollars and the budget"): dollars spent = billed node-hours × the plan's
$/node-hour. On Kubernetes a node is billed while its pod's containers run (queued time is free;
the count stops with the pods); locally, from the launch to the end or now. Projected = spent +
remaining time × nodes × $/node-hour, where remaining time is the samples still to see over the
trainer's measured samples/s (the ETA). Every figure names its inputs so a
finance reader can redo the arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from launcher.backends.base import STOPPED, TERMINAL_PHASES, Backend, Bundle, JobState
from planner.errors import EvaplanError, RuntimeFailure

if TYPE_CHECKING:  # the planner loads only when a plan is read
    from planner.estimate import Estimate

SECONDS_PER_HOUR = 3600.0
# The budget guard acts on a projection only once this many step records back the rate: the
# first steps include warm-up (kernel selection, allocator growth) and overstate the time left.
# An evaplan choice; spend itself is checked from the first second.
MIN_RECORDS_FOR_PROJECTION = 3


@dataclass(frozen=True)
class CostBasis:
    """What cost and progress are computed from, fixed at launch and kept in the job record."""

    nodes: int
    usd_per_node_hour: float | None  # None: the plan has no offering, so no price
    total_steps: int
    global_batch: int
    estimate_usd: float | None  # the planner's total for this pricing (compute + storage)
    pricing: str | None = None
    price_source: str | None = None

    @property
    def total_samples(self) -> int:
        return self.total_steps * self.global_batch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CostBasis:
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]


def read_estimate(data: Any, problem: str, *, hint: str) -> Estimate:
    """The planner's Estimate kept in `data` (a bundle's plan.json, a job record's copy); when it
    is not one, one line: `problem` with the first reason, and `hint`."""
    from pydantic import ValidationError

    from planner.estimate import Estimate

    try:
        return Estimate.model_validate(data)
    except ValidationError as e:
        raise EvaplanError(f"{problem} ({e.errors()[0].get('msg')})", hint=hint) from None


def cost_basis(bundle: Bundle, pricing: str | None = None) -> CostBasis:
    """Nodes and the $/node-hour of `pricing` (default: the estimate's first, i.e. on-demand or
    on-prem) from plan.json, the planner's Estimate; steps and batch from the run and DeepSpeed
    configs, the numbers the trainer runs with."""
    est = read_estimate(
        bundle.plan,
        f"plan.json in {bundle.path} is not an evaplan estimate",
        hint="re-render the bundle with this version of evaplan",
    )
    prices = est.cost.prices if est.cost else []
    chosen = (
        prices[0] if prices and pricing is None else next((p for p in prices if p.pricing == pricing), None)
    )
    if pricing is not None and chosen is None:
        have = ", ".join(p.pricing for p in prices) or "none (the plan has no offering)"
        raise EvaplanError(f"the plan has no {pricing} price", hint=f"prices in plan.json: {have}")
    try:
        batch = int(bundle.ds_config["train_batch_size"])
    except (KeyError, TypeError, ValueError) as e:
        raise EvaplanError(
            f"bundle {bundle.path}: ds_config.json lacks train_batch_size ({e})", hint="re-render the bundle"
        ) from e
    return CostBasis(
        nodes=est.plan.nodes,
        usd_per_node_hour=chosen.usd_per_node_hour if chosen else None,
        total_steps=int(bundle.run_config.total_steps),
        global_batch=batch,
        estimate_usd=chosen.total_usd if chosen else None,
        pricing=chosen.pricing if chosen else None,
        price_source=chosen.source if chosen else None,
    )


@dataclass(frozen=True)
class Progress:
    """Where a job is (steps, samples, rate, ETA) and what it has cost, against its cost basis."""

    phase: str
    basis: CostBasis  # steps, nodes, price and estimate, fixed at launch
    step: int | None
    samples_seen: float | None
    samples_per_s: float | None
    eta_s: float | None
    elapsed_s: float
    spent_usd: float | None  # None without a price
    projected_usd: float | None
    budget_usd: float | None
    window: int = 0  # step records the rate (and so ETA and projection) rests on

    @property
    def past_budget(self) -> str | None:
        """Said when the job still runs though its spend has reached its budget (whatever should
        have stopped it did not: a killed supervisor and torchrun, a deadline the cluster ignored)."""
        if self.budget_usd is None or self.spent_usd is None or self.phase in TERMINAL_PHASES:
            return None
        if self.spent_usd < self.budget_usd:
            return None
        return f"running past its budget: spent ${self.spent_usd:,.2f} of ${self.budget_usd:,.2f}"

    @property
    def over_budget(self) -> str | None:
        """Why the budget guard should stop the job, or None."""
        if self.budget_usd is None or self.spent_usd is None or self.phase in TERMINAL_PHASES:
            return None
        if self.spent_usd >= self.budget_usd:
            return f"spend ${self.spent_usd:,.2f} reached the budget ${self.budget_usd:,.2f}"
        if (
            self.projected_usd is not None
            and self.projected_usd > self.budget_usd
            and self.window >= MIN_RECORDS_FOR_PROJECTION
        ):
            return (
                f"projected spend ${self.projected_usd:,.2f} (spent ${self.spent_usd:,.2f} + ETA "
                f"{fmt_duration(self.eta_s)} × {self.basis.nodes} nodes × {fmt_usd(self.basis.usd_per_node_hour)}/node-hour) "
                f"passes the budget ${self.budget_usd:,.2f}"
            )
        return None


def window_rate(recent: list[dict[str, Any]]) -> float | None:
    """Samples/s over the recent step records: Δsamples_seen / Δtime_s when the records carry the
    trainer's clock (one process), else the harmonic mean of the per-step rates (= samples over
    summed step times). One step's own rate is too noisy for an ETA."""
    timed = [r for r in recent if isinstance(r.get("time_s"), int | float)]
    if (
        len(timed) >= 2
        and timed[-1]["time_s"] > timed[0]["time_s"]
        and timed[-1]["samples_seen"] > timed[0]["samples_seen"]
    ):
        return (timed[-1]["samples_seen"] - timed[0]["samples_seen"]) / (
            timed[-1]["time_s"] - timed[0]["time_s"]
        )
    rates = [float(r["samples_per_s"]) for r in recent if r.get("samples_per_s")]
    return len(rates) / sum(1.0 / x for x in rates) if rates else None


def elapsed_s(record: Any, state: JobState, now: datetime | None = None) -> float:
    """Seconds billed per node so far: this run plus earlier runs of a resumed job.

    Where the backend counts the workers' run time (Kubernetes: each pod's containers' running
    intervals), that is the bill: queued time costs nothing and the count stops with the pods.
    The largest count seen is kept in the record (`run_node_s`), so deleted pods keep their bill.
    Otherwise (local runs): from the job's start to its end, or now."""
    prior = float(record.plan.get("prior_elapsed_s", 0.0))
    node_s = billed_node_s(record, state)
    if node_s is not None:
        nodes = int((record.plan.get("cost_basis") or {}).get("nodes") or 1)
        return node_s / nodes + prior
    now = now or datetime.now(timezone.utc)
    # Clamped to the job's own creation: a start recorded before it (another clock) bills nothing extra.
    start = max(_utc(state.started_at or record.started_at or record.created_at), _utc(record.created_at))
    end = state.finished_at or (record.finished_at if state.phase in TERMINAL_PHASES else None) or now
    return max(0.0, (_utc(end) - start).total_seconds()) + prior


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def billed_node_s(record: Any, state: JobState) -> float | None:
    """Node-seconds of run time, from the backend now or as last recorded; None if not counted."""
    stored = record.plan.get("run_node_s")
    if state.run_node_s is not None:
        return max(float(stored or 0.0), state.run_node_s)
    if stored is not None or getattr(record, "backend", None) == "kubernetes":
        return float(stored or 0.0)
    return None


def compute_progress(
    record: Any, state: JobState, recent: list[dict[str, Any]], now: datetime | None = None
) -> Progress:
    basis = CostBasis.from_dict(record.plan["cost_basis"])
    elapsed = elapsed_s(record, state, now)
    priced = basis.usd_per_node_hour is not None
    rate_per_s = basis.nodes * (basis.usd_per_node_hour or 0.0) / SECONDS_PER_HOUR
    spent = elapsed * rate_per_s if priced else None
    step = samples = sps = eta = None
    if recent:
        step = int(recent[-1]["step"])
        samples = float(recent[-1]["samples_seen"])
        sps = window_rate(recent)
    if state.phase not in TERMINAL_PHASES and sps and samples is not None:
        eta = max(0.0, basis.total_samples - samples) / sps
    projected = None
    if spent is not None:
        projected = (
            spent + eta * rate_per_s
            if eta is not None
            else (spent if state.phase in TERMINAL_PHASES else None)
        )
    return Progress(
        phase=state.phase,
        basis=basis,
        step=step,
        samples_seen=samples,
        samples_per_s=sps,
        eta_s=eta,
        elapsed_s=elapsed,
        spent_usd=spent,
        projected_usd=projected,
        budget_usd=record.max_cost_usd,
        window=len(recent),
    )


def fmt_duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = round(s)
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    return f"{d}d{h:02d}h" if d else (f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s")


def fmt_usd(v: float | None) -> str:
    return "-" if v is None else f"${v:,.2f}"


def snapshot(backend: Backend, record: Any) -> tuple[JobState, Progress]:
    state = backend.state(record)
    recent = backend.recent_metrics(record) if state.ranks else []
    return state, compute_progress(record, state, recent)


# The budget guard's wait between tries while the API server is unreachable: doubling from the
# refresh interval up to this cap (an evaplan choice: an outage of minutes is retried about once a
# minute; the in-cluster deadline set at launch bounds the spend meanwhile).
OUTAGE_RETRY_CAP_S = 60.0


def watch_loop(
    backend: Backend,
    record: Any,
    *,
    interval_s: float,
    show: Callable[[JobState, Progress], None],
    on_budget: Callable[[str], None],
    max_iterations: int | None = None,
    on_notice: Callable[[str], None] | None = None,
    reload: Callable[[Any], Any] | None = None,
) -> tuple[JobState, Progress]:
    """Refresh until the job ends; stop it (on_budget says why) when the budget guard trips.

    `reload(record)` gives the job's record as stored now, before each refresh: a `stop` from
    another terminal is seen (the job ends as Stopped) instead of its deleted objects reading as
    Unknown forever. An unreachable or failing API server does not end the loop: it retries with
    backoff, saying so once per outage (on_notice), until the server answers again."""
    import time

    n = 0
    said: set[str] = set()
    outage_wait_s = 0.0

    def notice(line: str) -> None:
        if on_notice is not None and line not in said:
            said.add(line)
            on_notice(line)

    while True:
        if reload is not None:
            record = reload(record)
        try:
            state, prog = snapshot(backend, record)
        except RuntimeFailure as e:
            outage_wait_s = min(OUTAGE_RETRY_CAP_S, max(interval_s, 2 * outage_wait_s))
            notice(f"the API server did not answer ({e.message[:120]}); retrying with backoff")
            time.sleep(outage_wait_s)
            continue
        if outage_wait_s:
            notice("the API server answers again")
            outage_wait_s = 0.0
            said.clear()
        for line in getattr(backend, "notices", []):
            notice(line)
        show(state, prog)
        why = prog.over_budget
        if why:
            on_budget(why)
            backend.stop(record)
            return backend.state(record.with_(last_phase=STOPPED)), prog
        if state.phase in TERMINAL_PHASES:
            return state, prog
        n += 1
        if max_iterations is not None and n >= max_iterations:
            return state, prog
        waiter = getattr(backend, "wait_for_change", None)
        if waiter is not None:
            waiter(record, interval_s)
        else:
            time.sleep(interval_s)
