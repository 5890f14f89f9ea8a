"""A real Redis Cluster on loopback: three primaries with one replica each.

Six ``redis-server --cluster-enabled yes`` processes in a scratch directory, joined by
``redis-cli --cluster create … --cluster-replicas 1``; ``cluster-node-timeout`` is 2 s so that a
killed primary's replica takes over within a few seconds. Shared by the cluster tests
(``tests/cluster/conftest.py``) and the load test (``python -m bench.load --redis-cluster``).
"""

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis as SyncRedis
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster as SyncRedisCluster

NODE_TIMEOUT_MS = 2000
START_TIMEOUT = 30.0


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(count: int) -> list[int]:
    """``count`` consecutive ports free with their cluster-bus ports (port + 10000)."""
    for _ in range(200):
        base = random.randrange(20000, 29000)
        ports = list(range(base, base + count))
        if all(_free(p) and _free(p + 10000) for p in ports):
            return ports
    raise RuntimeError("no free ports for a Redis Cluster")


def _wait(condition: object, what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():  # type: ignore[operator]
                return
        except Exception:  # noqa: S110 - not up yet
            pass
        time.sleep(0.1)
    raise TimeoutError(f"Redis Cluster: {what} within {timeout} s")


@dataclass
class LocalCluster:
    """Six redis-server processes forming one cluster."""

    directory: Path
    ports: list[int]
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """A node's URL: the client discovers the others."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start_node(self, port: int) -> None:
        """Start (or restart, with its cluster config) the node on ``port``."""
        node_dir = self.directory / str(port)
        node_dir.mkdir(exist_ok=True)
        with (node_dir / "redis.log").open("ab") as log:
            self.processes[port] = subprocess.Popen(
                [
                    "redis-server",
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", f"nodes-{port}.conf",
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    "--dir", str(node_dir),
                    "--save", "",
                    "--appendonly", "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        _wait(lambda: SyncRedis(port=port).ping(), f"node {port} answering")

    def client(self) -> SyncRedisCluster:
        """A synchronous cluster client that starts from the running nodes (close it)."""
        running = [port for port, process in self.processes.items() if process.poll() is None]
        return SyncRedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in running])

    def state_ok(self) -> bool:
        """Every running node says ``cluster_state:ok``."""
        return all(
            SyncRedis(port=port).cluster("info")["cluster_state"] == "ok"
            for port, process in self.processes.items()
            if process.poll() is None
        )

    def replicas_synced(self) -> bool:
        """Every running replica has finished its sync with its primary (a replica that never
        synced would not be promoted)."""
        roles = [
            SyncRedis(port=port).info("replication")
            for port, process in self.processes.items()
            if process.poll() is None
        ]
        replicas = [info for info in roles if info["role"] == "slave"]
        return len(replicas) == 3 and all(i["master_link_status"] == "up" for i in replicas)

    def primary_of(self, key: str) -> int:
        """The port of the primary that owns ``key``'s slot (as the cluster says now)."""
        client = self.client()
        try:
            node = client.get_node_from_key(key)
            assert node is not None
            return int(node.port)
        finally:
            client.close()

    def wait_failover(self, key: str, old_primary: int, timeout: float) -> float:
        """Block until ``key``'s slot has a primary other than ``old_primary`` and the cluster
        is ok; returns the monotonic time it saw that."""
        _wait(
            lambda: self.primary_of(key) != old_primary and self.state_ok(),
            "a replica promoted",
            timeout,
        )
        return time.monotonic()

    def wait_healed(self) -> None:
        """Block until the cluster is ok with every replica in sync again."""
        _wait(self.state_ok, "cluster_state:ok")
        _wait(self.replicas_synced, "replicas in sync")

    def kill(self, port: int) -> None:
        """SIGKILL the node (a crash: no shutdown, no failover handshake)."""
        process = self.processes[port]
        process.kill()
        process.wait()

    def stop(self) -> None:
        """Stop every node."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def available() -> bool:
    """Whether redis-server and redis-cli are installed (Debian: redis)."""
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


@contextmanager
def local_cluster(directory: Path) -> Iterator[LocalCluster]:
    """Six nodes in ``directory``, joined, ``cluster_state:ok`` with every replica in sync;
    stopped with the context."""
    directory.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(directory, _ports(6))
    try:
        for port in cluster.ports:
            cluster.start_node(port)
        subprocess.run(
            [
                "redis-cli",
                "--cluster", "create",
                *(f"127.0.0.1:{port}" for port in cluster.ports),
                "--cluster-replicas", "1",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        _wait(cluster.state_ok, "cluster_state:ok")
        _wait(cluster.replicas_synced, "replicas in sync")
        yield cluster
    finally:
        cluster.stop()
