"""A real one-node Slurm cluster on 127.0.0.1 for the slurm backend's tests.

munged, slurmctld and slurmd (Debian's packages: munge, slurmctld, slurmd, slurm-client) run as root
from a config in a temporary folder: loopback only, ports above 1024, process tracking by /proc
(proctrack/linuxproc: no cgroups in a container), consumable CPUs and memory (select/cons_tres), one
CPU-only node with this machine's CPUs and memory as `slurmd -C` reports them. No accounting storage
(so no `sacct`): the backend reads squeue/scontrol. Clients find it through $SLURM_CONF.

Options are those of slurm.conf(5) and munged(8) of Slurm 22.05 / MUNGE 0.5.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel")
# How long the daemons may take to answer after start (a cold start on a loaded 2-core machine takes
# 1-3 s; the bound only keeps a broken install from hanging the suite).
START_TIMEOUT_S = 60.0
PARTITION = "debug"


def missing_reason() -> str | None:
    """Why a cluster cannot start here, or None."""
    missing = [d for d in (*DAEMONS, *CLIENTS) if shutil.which(d, path=_sbin_path()) is None]
    if missing:
        return (
            f"Slurm is not installed ({', '.join(missing)} missing): "
            "apt-get install slurmctld slurmd slurm-client munge"
        )
    if os.geteuid() != 0:
        return "the Slurm test cluster's daemons must run as root"
    host = socket.gethostname().split(".")[0]
    try:
        socket.gethostbyname(host)  # the job's script resolves the node's name for the rendezvous
    except OSError:
        return f"this host's name {host!r} does not resolve (the Slurm node is named after it)"
    if (os.cpu_count() or 1) < 2:
        return "the Slurm tests run 2 CPU ranks on one node: this machine has 1 CPU"
    return None


def _sbin_path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_hardware() -> tuple[int, int]:
    """(CPUs, RealMemory MiB) as slurmd itself sees this machine."""
    out = subprocess.run(
        [shutil.which("slurmd", path=_sbin_path()) or "slurmd", "-C"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    cpus = int(re.search(r"CPUs=(\d+)", out).group(1))  # type: ignore[union-attr]
    mem = int(re.search(r"RealMemory=(\d+)", out).group(1))  # type: ignore[union-attr]
    return cpus, mem


class SlurmCluster:
    """Start with `start()`, stop with `stop()`; `env` is what a client needs (SLURM_CONF)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # The node is this host, by its own name: the job's script resolves the first node's name for
        # torchrun's rendezvous, so it must be a name the host resolves.
        self.node = socket.gethostname().split(".")[0]
        self.partition = PARTITION
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.conf = root / "slurm.conf"
        self.munge_socket = root / "munge" / "munge.socket"
        self.cpus, self.mem_mib = _node_hardware()

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        r = self.root
        for d in ("munge", "ctld", "spool", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o400)
        ctld_port, d_port = _free_ports(2)
        self.ctld_port = ctld_port
        # slurmd resolves its NodeName from the host's name unless told (-N); NodeAddr pins loopback.
        self.conf.write_text(
            f"""ClusterName=evaplantest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={r / "ctld"}
SlurmdSpoolDir={r / "spool"}
SlurmctldPidFile={r / "slurmctld.pid"}
SlurmdPidFile={r / "slurmd.pid"}
SlurmctldLogFile={r / "log" / "slurmctld.log"}
SlurmdLogFile={r / "log" / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
JobCompType=jobcomp/filetxt
JobCompLoc={r / "log" / "jobcomp.txt"}
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=1
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
MinJobAge=300
SchedulerParameters=sched_interval=1
NodeName={self.node} NodeAddr=127.0.0.1 NodeHostname=localhost CPUs={self.cpus} RealMemory={self.mem_mib} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""
        )

    def start(self) -> SlurmCluster:
        self._write_config()
        r = self.root
        sbin = _sbin_path()
        env = {**os.environ, **self.env}
        logs = open(r / "log" / "daemons.out", "ab")
        self.procs["munged"] = subprocess.Popen(
            [
                shutil.which("munged", path=sbin) or "munged",
                "-F",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={r / 'munge' / 'munge.key'}",
                f"--pid-file={r / 'munge' / 'munged.pid'}",
                f"--log-file={r / 'log' / 'munged.log'}",
                f"--seed-file={r / 'munge' / 'munged.seed'}",
            ],
            stdout=logs,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self._wait(lambda: self.munge_socket.exists(), "munged's socket")
        self.procs["slurmctld"] = subprocess.Popen(
            [shutil.which("slurmctld", path=sbin) or "slurmctld", "-D", "-i", "-f", str(self.conf)],
            stdout=logs,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self._wait(lambda: self._scontrol("ping").find("UP") >= 0, "slurmctld to answer ping")
        self.procs["slurmd"] = subprocess.Popen(
            [shutil.which("slurmd", path=sbin) or "slurmd", "-D", "-N", self.node, "-f", str(self.conf)],
            stdout=logs,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self._wait(self.node_idle, "the node to register idle")
        return self

    def node_idle(self) -> bool:
        return "State=IDLE" in self._scontrol("show", "node", self.node)

    def _scontrol(self, *args: str) -> str:
        p = subprocess.run(
            ["scontrol", *args], capture_output=True, text=True, env={**os.environ, **self.env}, timeout=30
        )
        return p.stdout + p.stderr

    def scontrol(self, *args: str) -> str:
        return self._scontrol(*args)

    def _wait(self, pred, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + START_TIMEOUT_S
        while not pred():
            for name, p in self.procs.items():
                if p.poll() is not None:
                    self.stop()
                    raise RuntimeError(
                        f"{name} exited ({p.returncode}) while waiting for {what}: {self.log_tail()}"
                    )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gave up waiting for {what}: {self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self) -> str:
        out = []
        for name in ("daemons.out", "slurmctld.log", "slurmd.log", "munged.log"):
            p = self.root / "log" / name
            if p.is_file():
                out.append(f"{name}: " + " | ".join(p.read_text(errors="replace").splitlines()[-5:]))
        return "; ".join(out)

    def cancel_all(self) -> None:
        """Cancel every job, wait until none is left on the node, and return the node to service."""
        if "slurmctld" not in self.procs or self.procs["slurmctld"].poll() is not None:
            return
        env = {**os.environ, **self.env}
        subprocess.run(["scancel", "--user=root"], env=env, timeout=30, check=False)
        self.scontrol("update", f"nodename={self.node}", "state=resume")
        self._wait(self.node_idle, "the node to be idle again")

    def stop(self) -> None:
        """Cancel every job, then SIGTERM the daemons in reverse order and wait for them."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(
                ["scancel", "--user=root"], env={**os.environ, **self.env}, timeout=30, check=False
            )
        for name in reversed(DAEMONS):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
