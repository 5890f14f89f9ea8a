"""A real PostgreSQL streaming replica of the test server, for the read-replica tests.

``pg_basebackup -R`` copies the primary (TEST_POSTGRES_URL's server) into a scratch directory and
writes the standby settings; a second ``postgres`` then runs on another loopback port. PostgreSQL
refuses to run as root, so when the suite runs as root (CI) the replica runs as the ``postgres``
user, like the machine's own server. The primary must accept replication connections from
127.0.0.1 (``.ci/run`` adds the ``pg_hba.conf`` line and reloads).

Lag is forced with ``recovery_min_apply_delay`` (a reload setting): ``lag()`` sets it and waits
until the replica is provably behind the primary, ``catch_up()`` clears it and waits until the
replica has replayed everything the primary had written.
"""

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.live_server import free_port, tail

BIN = Path(os.environ.get("TEST_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> bool:
    """Whether this machine can start a replica (PostgreSQL's server binaries are installed)."""
    return (BIN / "pg_basebackup").exists() and (BIN / "pg_ctl").exists()


def _as_server_user(args: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


def _psql(host: str, port: int, user: str, sql: str) -> str:
    result = subprocess.run(
        [str(BIN / "psql"), "-h", host, "-p", str(port), "-U", user, "-d", "postgres", "-Atc", sql],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.strip()


def _write_as_server_user(path: Path, content: str) -> None:
    path.write_text(content)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


@dataclass
class Replica:
    """A running standby: ``url`` is TEST_POSTGRES_URL with the replica's port."""

    url: str
    port: int
    data_dir: Path
    primary_host: str
    primary_port: int
    user: str

    def sql(self, statement: str) -> str:
        return _psql("127.0.0.1", self.port, self.user, statement)

    def primary_sql(self, statement: str) -> str:
        return _psql(self.primary_host, self.primary_port, self.user, statement)

    def _ctl(self, *args: str) -> None:
        log = self.data_dir.parent / "replica.log"
        subprocess.run(
            _as_server_user(
                [str(BIN / "pg_ctl"), "-D", str(self.data_dir), "-l", str(log), "-w", *args]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        self._ctl("-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data_dir}", "start")

    def running(self) -> bool:
        status = subprocess.run(
            _as_server_user([str(BIN / "pg_ctl"), "-D", str(self.data_dir), "status"]),
            capture_output=True,
            check=False,
        )
        return status.returncode == 0

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def _set_delay(self, delay: str) -> None:
        conf = self.data_dir / "delay.conf"
        _write_as_server_user(conf, f"recovery_min_apply_delay = '{delay}'\n")
        self._ctl("reload")

    def behind(self) -> bool:
        """Whether the replica has not yet replayed everything the primary has written."""
        target = self.primary_sql("SELECT pg_current_wal_insert_lsn()")
        return self.sql(f"SELECT pg_last_wal_replay_lsn() < '{target}'::pg_lsn") == "t"

    def lag(self, delay: str = "1h") -> None:
        """Hold back the replay of every later commit by ``delay``."""
        self._set_delay(delay)

    def catch_up(self, timeout: float = 60.0) -> None:
        """Replay without delay, and wait until everything written so far is replayed."""
        self._set_delay("0")
        # The flush position, not the insert one: after a record that ends a WAL page, the insert
        # position points past the next page's header, which no replica reaches until more WAL
        # is written (on a quiet server, never). Every commit so far is at or before it.
        target = self.primary_sql("SELECT pg_current_wal_flush_lsn()")
        deadline = time.monotonic() + timeout
        while self.sql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn") != "t":
            if time.monotonic() > deadline:
                raise TimeoutError(f"replica did not replay up to {target} in {timeout}s")
            time.sleep(0.05)


@contextmanager
def streaming_replica(primary_url: str) -> Iterator[Replica]:
    """A streaming replica of ``primary_url``'s server, stopped and deleted afterwards."""
    url = make_url(primary_url)
    host, primary_port, user = url.host or "127.0.0.1", url.port or 5432, url.username or "postgres"
    scratch = Path(tempfile.mkdtemp(prefix="pg-replica-"))
    data_dir = scratch / "data"
    if os.geteuid() == 0:
        shutil.chown(scratch, "postgres", "postgres")
    port = free_port()
    try:
        _base_backup(host, primary_port, user, data_dir)
        replica = Replica(
            url=url.set(port=port).render_as_string(hide_password=False),
            port=port,
            data_dir=data_dir,
            primary_host=host,
            primary_port=primary_port,
            user=user,
        )
        try:
            replica.start()
        except subprocess.CalledProcessError as exc:
            log = tail(scratch / "replica.log")
            raise RuntimeError(f"the replica did not start:\n{log}") from exc
        yield replica
    finally:
        if data_dir.exists():
            with suppress(subprocess.CalledProcessError):  # stopped by the test, or never up
                Replica("", 0, data_dir, host, primary_port, user).stop()
        shutil.rmtree(scratch, ignore_errors=True)


def _base_backup(host: str, port: int, user: str, data_dir: Path) -> None:
    subprocess.run(
        _as_server_user(
            [
                str(BIN / "pg_basebackup"),
                *("-h", host, "-p", str(port), "-U", user),
                *("-D", str(data_dir), "-R", "-X", "stream", "-c", "fast"),
            ]
        ),
        check=True,
        capture_output=True,
        timeout=300,
    )
    # Debian keeps the server's configuration outside its data directory, so the copy has none:
    # the replica runs on defaults, trusting loopback like the test server, and reads its
    # replay delay from a file of its own.
    for name, content in (
        ("pg_hba.conf", "local all all trust\nhost all all 127.0.0.1/32 trust\n"),
        ("postgresql.conf", "hot_standby = on\ninclude_if_exists = 'delay.conf'\n"),
    ):
        if not (data_dir / name).exists():
            _write_as_server_user(data_dir / name, content)
