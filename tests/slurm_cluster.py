"""A real single-node SLURM cluster for the ``slurm`` tests: munged, slurmctld and slurmd from
Debian's ``slurm-wlm`` and ``munge``, on free local ports, with every file in one temporary folder,
stopped by pid at the end. Not a mock: sbatch, srun, squeue, scancel and scontrol are the real ones.

``SelectTypeParameters=CR_Core`` (not ``CR_Core_Memory``: without ``DefMemPerCPU`` every task would
ask for the node's whole memory and ``srun -n 2`` would wait forever for a second node); no
accounting (``sacct`` is unavailable, as on many small clusters); ``cred_expire=10``: a requeued
job waits that long before it starts again (120 s by default)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol", "scancel")
CPUS = 8  # declared (config_overrides): more tasks than the 2 real cores, all tiny


def missing_tools() -> list[str]:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [name for name in DAEMONS if shutil.which(name, path=path) is None]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class Cluster:
    root: Path
    conf: Path
    node: str
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """The environment for SLURM commands (and for processes that call them)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> str:
        out = subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    def queue(self) -> list[str]:
        """Job ids still in the queue (any state)."""
        return self.run("squeue", "-h", "-o", "%i").split()

    def wait_empty(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while self.queue():
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still queued after {timeout} s: {self.queue()}")
            time.sleep(0.5)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _write_conf(root: Path, node: str) -> Path:
    ctld, slurmd = _free_ports(2)
    conf = root / "slurm.conf"
    conf.write_text(
        f"""ClusterName=carrot-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld}
SlurmdPort={slurmd}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
AuthInfo=socket={root}/munge.socket,cred_expire=10
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=2
KillWait=5
SchedulerParameters=sched_interval=1
MessageTimeout=20
NodeName={node} NodeAddr=127.0.0.1 CPUs={CPUS} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
    )
    return conf


def _start(name: str, cmd: list[str], root: Path, env: dict[str, str]) -> int:
    with open(root / f"{name}.out", "w") as out:
        subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=60)
    pidfile = root / f"{name}.pid"
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text().strip()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} wrote no pid file: {(root / f'{name}.out').read_text()}")
        time.sleep(0.1)
    return int(pidfile.read_text().split()[0])


def start_cluster(root: Path) -> Cluster:
    node = socket.gethostname().split(".")[0]
    for sub in ("state", "spool", "munge"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = _write_conf(root, node)
    cluster = Cluster(root, conf, node)
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    env = cluster.env
    try:
        munge = [
            "munged", "--force", f"--key-file={key}", f"--socket={root}/munge.socket",
            f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log",
            f"--seed-file={root}/munge/seed",
        ]  # fmt: skip
        cluster.pids["munged"] = _start("munged", munge, root, env)
        cluster.pids["slurmctld"] = _start(
            "slurmctld", ["slurmctld", "-c", "-f", str(conf)], root, env
        )
        cluster.pids["slurmd"] = _start(
            "slurmd", ["slurmd", "-N", node, "-f", str(conf)], root, env
        )
        deadline = time.monotonic() + 60
        while True:
            state = cluster.run("sinfo", "-h", "-n", node, "-o", "%T", check=False).strip()
            if state.startswith("idle"):
                return cluster
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"node {node} is {state!r}, not idle, after 60 s; slurmd log:\n"
                    + cluster.log("slurmd")[-2000:]
                    + "\nslurmctld log:\n"
                    + cluster.log("slurmctld")[-2000:]
                )
            time.sleep(0.5)
    except BaseException:
        stop_cluster(cluster)
        raise


def stop_cluster(cluster: Cluster) -> None:
    """Cancel what is left, then stop the daemons (by pid, newest first)."""
    if "slurmctld" in cluster.pids:
        cluster.run("scancel", "--user", str(os.getuid()), check=False)
    for name in ("slurmd", "slurmctld", "munged"):
        pid = cluster.pids.pop(name, None)
        if pid is None:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The session's cluster; skipped (with the reason) only where SLURM is not installed."""
    missing = missing_tools()
    if missing:
        pytest.skip(
            f"SLURM is not installed ({', '.join(missing)} missing): "
            "apt-get install slurm-wlm munge (scripts/test.sh does it when run as root)."
        )
    if os.getuid() != 0:
        pytest.skip("the test cluster's slurmd must run as root (it starts jobs as their user).")
    # A short path: the munge socket's path must fit in a sockaddr_un.
    root = Path(tmp_path_factory.mktemp("slurm"))
    os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    cluster = start_cluster(root)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
