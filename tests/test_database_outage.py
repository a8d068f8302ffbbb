"""The job when its database is unreachable at the start or lost in the middle of a run.

The job reaches the test server through a TCP forwarder on 127.0.0.1 that the
tests open and close; the forwarder reaches the server over TCP or, for the
embedded server, over its Unix socket. A closed forwarder accepts each
connection and closes it at once, which psycopg reports as a lost connection.
"""

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from gymchurn.settings import get_settings
from tests.conftest import REPO, prefect_home
from tests.test_cli import _invoke
from tests.test_run_safety import _backends_waiting_on, _stderr


class Forwarder:
    """Forward TCP connections from a free port on 127.0.0.1 to the database server.

    Args:
        target: ``(family, address)`` of the server: ``AF_INET`` with
            ``(host, port)``, or ``AF_UNIX`` with the socket file's path.
    """

    def __init__(self, target: tuple[socket.AddressFamily, object], open_after: int = 0) -> None:
        self.target = target
        self.rejected = 0
        # Connections to reject before forwarding again; None rejects all.
        self.reject_next: int | None = open_after
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                reject = self.reject_next is None or self.reject_next > 0
                if reject:
                    self.rejected += 1
                    if self.reject_next:
                        self.reject_next -= 1
            if reject:
                client.close()
                continue
            family, address = self.target
            server = socket.socket(family, socket.SOCK_STREAM)
            server.connect(address)
            with self._lock:
                self._pairs.append((client, server))
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while block := source.recv(65536):
                target.sendall(block)
        except OSError:
            pass
        for end in (source, target):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """Reject new connections and break the forwarded ones."""
        with self._lock:
            self.reject_next = None
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for end in pair:
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def restore(self) -> None:
        with self._lock:
            self.reject_next = 0

    def close(self) -> None:
        self.cut()
        self._listener.close()


def _server_address(url: sa.URL) -> tuple[socket.AddressFamily, object]:
    """Where the server of ``url`` listens: its Unix socket when the URL names a folder."""
    port = url.port or 5432
    folder = url.query.get("host")
    if folder and folder.startswith("/"):
        return socket.AF_UNIX, os.path.join(folder, f".s.PGSQL.{port}")
    return socket.AF_INET, (url.host or "127.0.0.1", port)


@pytest.fixture
def forwarder(database, server_url, monkeypatch):
    """A forwarder to the test database; DATABASE_URL points at it."""
    proxy = Forwarder(_server_address(server_url))
    url = database.url.set(
        host="127.0.0.1",
        port=proxy.port,
        drivername="postgresql",
        query={key: value for key, value in database.url.query.items() if key != "host"},
    )
    monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
    monkeypatch.setenv("GYMCHURN_DB_RETRY_SECONDS", "[0.2, 0.5]")
    get_settings.cache_clear()
    yield proxy
    proxy.close()
    get_settings.cache_clear()


def _run_rows(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(sa.text("SELECT status, message FROM churn.runs ORDER BY 1"))
        ]


def test_unreachable_at_start_fails_after_retries(database, forwarder):
    forwarder.cut()

    result = _invoke("run", "--month", "2026-02")

    assert result.exit_code == 1
    assert "cannot connect to the database after 3 attempt(s)" in result.output
    # The first attempt and the two retries of GYMCHURN_DB_RETRY_SECONDS.
    assert forwarder.rejected == 3
    assert _run_rows(database) == []


def test_unreachable_at_start_recovers_within_retries(database, forwarder):
    forwarder.reject_next = 2

    result = _invoke("db", "upgrade")

    assert result.exit_code == 0, result.output
    assert forwarder.rejected == 2
    assert "schema up to date" in result.stdout


def test_lost_mid_run_recorded_failed(database, admin_engine, forwarder, tmp_path, monkeypatch):
    result = _invoke("simulate", "--clients", "1500", "--months", "2", "--start", "2026-01")
    assert result.exit_code == 0, result.output
    # Room for the flow's own publish retries (2 s and 10 s) before the
    # failure is recorded.
    monkeypatch.setenv("GYMCHURN_DB_RETRY_SECONDS", "[1, 2, 4, 8, 15, 30]")
    home = tmp_path / "job"
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home(home / "prefect")),
        "GYMCHURN_JOB_PROCESS": "1",
    }
    conn = database.connect()
    transaction = conn.begin()
    conn.execute(sa.text("LOCK TABLE churn.findings IN ACCESS EXCLUSIVE MODE"))
    job = subprocess.Popen(
        [sys.executable, "-m", "gymchurn.cli", "run", "--month", "2026-02"],
        cwd=REPO,
        env=env,
        stdout=(home / "stdout").open("w"),
        stderr=(home / "stderr").open("w"),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        while _backends_waiting_on(database, "churn.findings") != 1:
            assert job.poll() is None, _stderr(tmp_path, "job")[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        # Inside its publish transaction: cut the network and end the job's sessions.
        forwarder.cut()
        with admin_engine.connect() as admin:
            admin.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                    " AND pid <> :holder"
                ),
                {
                    "name": database.url.database,
                    "holder": conn.connection.driver_connection.info.backend_pid,
                },
            )
        transaction.rollback()
        # The publish task's first try and its two retries fail, then the
        # failure cannot be recorded either; the database comes back after that.
        while "could not record its failure" not in _stderr(tmp_path, "job"):
            assert job.poll() is None, _stderr(tmp_path, "job")[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        forwarder.restore()
        code = job.wait(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
        conn.close()

    assert code == 1, _stderr(tmp_path, "job")[-3000:]
    runs = _run_rows(database)
    assert len(runs) == 1
    status, message = runs[0]
    assert status == "failed"
    assert message.startswith("OperationalError")
    with database.connect() as check:
        scores = check.execute(sa.text("SELECT count(*) FROM churn.scores")).scalar_one()
    assert scores == 0
