"""The inter-node network a bundle requests: the offering's fabric (profiles/offerings/*.yaml
`fabric:`) unless the user names an RDMA resource or turns it off, its NCCL/RCCL and libfabric
environment, and a warning when the manifests cannot deliver the bandwidth the plan assumed.

- EFA (AWS p4de/p5/p5en/p6): the EFA device plugin's `vpc.amazonaws.com/efa` (every interface of the
  node); NCCL reaches it through the aws-ofi-nccl plugin, told by FI_PROVIDER=efa, with GPUDirect RDMA
  on (FI_EFA_USE_DEVICE_RDMA=1). Source: aws-ofi-nccl, "EFA environment variables"
  (https://github.com/aws/aws-ofi-nccl/blob/master/doc/efa-env.md) and the EKS EFA guide
  (https://docs.aws.amazon.com/eks/latest/userguide/node-efa.html).
- InfiniBand / RoCE: an RDMA device-plugin resource (rdma/rdma_shared_device_a of the RDMA shared
  device plugin, rdma/ib on CoreWeave), IPC_LOCK so verbs can pin memory, NCCL_IB_HCA=mlx5 (every
  ConnectX HCA; NCCL environment variables, https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/env.html)
  and, on RoCE v2, NCCL_IB_GID_INDEX=3. RCCL reads the same NCCL_* variables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from planner.spec import FabricSpec

EFA_ENV = (("FI_PROVIDER", "efa"), ("FI_EFA_USE_DEVICE_RDMA", "1"))
IB_HCA_DEFAULT = "mlx5"  # prefix: every mlx5_* HCA (NCCL_IB_HCA accepts a prefix list)


@dataclass(frozen=True)
class FabricRequest:
    """What the pod asks for and sets, and why."""

    kind: str  # efa | infiniband | roce | tcp | none
    resource: str | None = None
    count: int = 0
    ipc_lock: bool = False
    env: tuple[tuple[str, str], ...] = ()
    roce: bool = False
    warnings: tuple[str, ...] = field(default_factory=tuple)


def resolve(
    fabric: FabricSpec | None,
    offering: str | None,
    *,
    use_fabric: bool,
    rdma_resource: str | None,
    rdma_per_node: int,
    ib_hca: str | None,
    roce: bool | None,
    vendor: str,
    nodes: int,
    inter_node_gbps: float,
    hardware: str,
) -> FabricRequest:
    """The fabric of one bundle; a user's --rdma-resource / --roce / --ib-hca win over the offering's."""
    if rdma_resource:
        kind = fabric.kind if fabric is not None and fabric.kind in ("infiniband", "roce") else "infiniband"
        is_roce = roce if roce is not None else (kind == "roce" or (fabric is None and vendor == "amd"))
        env = [("NCCL_IB_HCA", ib_hca or IB_HCA_DEFAULT)] if ib_hca else []
        return FabricRequest(
            kind="roce" if is_roce else kind,
            resource=rdma_resource,
            count=rdma_per_node,
            ipc_lock=True,
            env=tuple(env),
            roce=is_roce,
        )
    if fabric is None or not use_fabric or fabric.kind == "tcp" or fabric.resource is None:
        why = (
            "--no-fabric was given"
            if fabric is not None and not use_fabric
            else f"{offering} has no RDMA device plugin ({fabric.kind})"
            if fabric is not None
            else f"offering {offering} records no fabric"
            if offering
            else "no offering names the fabric"
        )
        warnings = ()
        if nodes > 1:
            warnings = (
                f"the plan assumes {inter_node_gbps:g} GB/s per GPU between nodes ({hardware} profile, "
                f"collective.inter_node_gbps) but the manifests request no RDMA or EFA device ({why}): "
                "NCCL falls back to TCP sockets and steps will be slower than planned; name the device "
                "with --rdma-resource, or plan on an offering with a fabric",
            )
        is_roce = bool(roce) if roce is not None else (vendor == "amd" and fabric is None)
        env = (("NCCL_IB_HCA", ib_hca),) if ib_hca else ()
        return FabricRequest(kind="none", env=env, roce=is_roce, warnings=warnings)
    if fabric.kind == "efa":
        return FabricRequest(kind="efa", resource=fabric.resource, count=fabric.per_node, env=EFA_ENV)
    is_roce = roce if roce is not None else fabric.kind == "roce"
    return FabricRequest(
        kind=fabric.kind,
        resource=fabric.resource,
        count=fabric.per_node,
        ipc_lock=True,
        env=(("NCCL_IB_HCA", ib_hca or IB_HCA_DEFAULT),),
        roce=is_roce,
    )
