"""A throw-away PostgreSQL server for tests: Debian's binaries, loopback only.

``PostgresServer`` runs ``initdb`` into a fresh temporary directory and the
``postgres`` server from ``/usr/lib/postgresql/<ver>/bin`` (override with
``FRUIX_TEST_PG_BINDIR``).  PostgreSQL refuses to run as root, so when the
tests run as root the server runs as the ``postgres`` system user, in a
directory that user owns (not under pytest's root-only ``tmp_path``).

* listens on ``127.0.0.1`` and a free port only; its unix socket is in the
  temporary directory (never ``/var/run/postgresql``);
* local (socket) connections are ``trust`` for the bootstrap superuser; TCP
  connections need a password (``scram-sha-256``);
* creates one role with a random password and one database it owns;
* ``restart()`` stops the server (fast shutdown) and starts it again on the
  same port and data directory, so the data is kept;
* ``stop()`` signals only the server process this object started (by pid),
  escalating SIGINT → SIGQUIT → SIGKILL, then the directory is removed.

The system PostgreSQL service is never touched.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

SERVER_USER = "postgres"


def find_bindir() -> Path:
    """The directory holding Debian's ``initdb``/``postgres``, newest version first."""
    explicit = os.environ.get("FRUIX_TEST_PG_BINDIR")
    candidates = [explicit] if explicit else sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0, reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "postgres").is_file():
            return Path(c)
    raise RuntimeError(
        "PostgreSQL server binaries not found: expected initdb and postgres in /usr/lib/postgresql/<ver>/bin "
        f"(or FRUIX_TEST_PG_BINDIR), found {candidates or 'no such directory'}; "
        "install them with `apt-get install -y postgresql` (make test does)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    """One PostgreSQL cluster in a temporary directory; see the module doc."""

    bindir: Path = field(default_factory=find_bindir)
    user: str = "fruix"
    dbname: str = "fruix_dagster"
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    start_timeout: float = 60.0

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="fruix-pg-"))
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log_path = self.root / "server.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._as_user: dict = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam(SERVER_USER)
            self._as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            self._home = pw.pw_dir
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        else:
            self._home = os.path.expanduser("~")
        os.chmod(self.root, 0o700)

    # -- running commands as the server's user -----------------------------

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(HOME=self._home, LC_ALL="C.UTF-8", LANG="C.UTF-8", PGTZ="UTC")
        return env

    def _run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        res = subprocess.run(argv, cwd=self.root, env=self._env(), capture_output=True, text=True,
                             timeout=120, **self._as_user, **kw)
        if res.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed with status {res.returncode}:\n{res.stdout}\n{res.stderr}")
        return res

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run SQL as the bootstrap superuser over the unix socket; return unaligned output."""
        return self._run([str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                          "-h", str(self.socket_dir), "-p", str(self.port), "-U", SERVER_USER, "-d", db,
                          "-c", sql]).stdout.strip()

    # -- lifecycle ---------------------------------------------------------

    def init(self) -> None:
        self.socket_dir.mkdir()
        if self._as_user:
            os.chown(self.socket_dir, self._as_user["user"], self._as_user["group"])
        pwfile = self.root / "superuser.pw"
        pwfile.write_text(secrets.token_hex(16) + "\n")
        if self._as_user:
            os.chown(pwfile, self._as_user["user"], self._as_user["group"])
        self._run([str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", SERVER_USER,
                   f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                   "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        pwfile.unlink()

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"postgres already running (pid {self.proc.pid})")
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data_dir),
                 "-c", f"listen_addresses={self.host}", "-c", f"port={self.port}",
                 "-c", f"unix_socket_directories={self.socket_dir}",
                 "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
                 "-c", "max_connections=100", "-c", "shared_buffers=32MB",
                 "-c", "logging_collector=off", "-c", "log_min_messages=warning"],
                cwd=self.root, env=self._env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, **self._as_user)
        finally:
            log.close()
        self.starts += 1
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with status {self.proc.returncode} while starting:\n"
                                   f"{self.log_tail()}")
            res = subprocess.run([str(self.bindir / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port),
                                  "-d", "postgres", "-t", "2"], env=self._env(), capture_output=True)
            if res.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres not ready on {self.host}:{self.port} after "
                                   f"{self.start_timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server this object started: fast shutdown, then immediate, then kill."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        if sig == signal.SIGKILL:
            # the postmaster is gone; its children (same session) must not linger
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    def restart(self) -> None:
        """Stop and start again on the same port and data directory (data is kept)."""
        self.stop()
        self.start()

    def create_role_and_db(self) -> None:
        self.psql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
        self.psql(f"CREATE DATABASE {self.dbname} OWNER {self.user}")

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- facts -------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def dagster_env(self) -> dict[str, str]:
        """The variables deploy/dagster.postgres.yaml reads."""
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port),
                "DAGSTER_PG_USER": self.user, "DAGSTER_PG_PASSWORD": self.password,
                "DAGSTER_PG_DB": self.dbname}

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.dbname}"

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"


@contextlib.contextmanager
def running_postgres(**kw) -> Iterator[PostgresServer]:
    server = PostgresServer(**kw)
    try:
        server.init()
        server.start()
        server.create_role_and_db()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL server on 127.0.0.1 with one role and database; stopped at teardown."""
    try:
        bindir = find_bindir()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    with running_postgres(bindir=bindir) as server:
        yield server
