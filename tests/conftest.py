"""Shared fixtures: the default profile and its forward model are built once per session; a real PostgreSQL
server (a throwaway cluster) for the review store's central-server tests."""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from parcelscan.datasets.physics.forward import ForwardModel, forward_model
from parcelscan.datasets.physics.profile import ScannerProfile, default_profile
from parcelscan.inference.review.db import close_pools, migrate


@pytest.fixture(scope="session")
def profile() -> ScannerProfile:
    return default_profile()


@pytest.fixture(scope="session")
def model(profile: ScannerProfile) -> ForwardModel:
    return forward_model(profile)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from two threads, and on a shared CPU spinning OpenMP threads slow them
    tenfold; the training code itself keeps PyTorch's default. Test modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture()
def unsplit_copy(tmp_path):
    """``unsplit_copy(dataset_dir) -> copy``: the dataset copied under tmp_path with every split removed
    from its manifest, to check that commands needing splits refuse it."""
    import shutil

    from parcelscan.datasets.manifest import read_manifest, write_manifest

    def make(source):
        copy = tmp_path / "unsplit"
        shutil.copytree(source, copy)
        records = read_manifest(copy)
        for record in records:
            record.split = None
        write_manifest(copy / "manifest.jsonl", records)
        return copy

    return make


# --- a real PostgreSQL server (issue 19) ----------------------------------------------------------------------
PG_MISSING = ("PostgreSQL's server programs (initdb, pg_ctl) were not found: install Debian's postgresql package "
              "(`make postgres`, or `apt-get install -y postgresql` as root). The central review server's tests "
              "need a real server; they fail rather than skip without one.")


def _pg_bin_dir() -> Path:
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).parent] if on_path else []
    candidates += [Path(p).parent for p in sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                                                  key=lambda p: int(Path(p).parts[-3]), reverse=True)]
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    pytest.fail(PG_MISSING)


class PostgresServer:
    """A throwaway cluster in a temp dir, on 127.0.0.1 and a unix socket; run as the ``postgres`` OS user when
    the tests run as root (the server refuses root). ``kill()`` is a crash: SIGKILL to the postmaster and
    every backend; ``start()`` after it runs PostgreSQL's crash recovery."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.as_user = "postgres" if os.geteuid() == 0 else None
        self.base = Path(tempfile.mkdtemp(prefix="parcelscan-pg-"))
        self.data, self.socket_dir = self.base / "data", self.base / "socket"
        self.socket_dir.mkdir()
        if self.as_user:
            shutil.chown(self.base, self.as_user)
            shutil.chown(self.socket_dir, self.as_user)
        self.port = _free_port()
        self.passfile: Path | None = None  # the session's PGPASSFILE (set by the fixture)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.socket_dir}'\nmax_connections = 120\n"
                       "shared_buffers = 16MB\nfsync = on\nsynchronous_commit = on\n")
        self.start()

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess:
        argv = [str(self.bin_dir / program), *args]
        if self.as_user:
            argv = ["runuser", "-u", self.as_user, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=self.base)
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed: {result.stdout}{result.stderr}")
        return result

    def start(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.base / "server.log"), "-w", "-t", "60", "start")
        except RuntimeError as error:
            log = (self.base / "server.log").read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"{error}\nserver.log:\n" + "\n".join(log)) from None

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def kill(self) -> int:
        """SIGKILL the whole server (postmaster and backends), as a crash would; returns how many processes."""
        postmaster = self.postmaster_pid()
        family = [postmaster, *_children(postmaster)]
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in family) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in family), "the PostgreSQL processes did not die"
        # all verified dead; an unreaped (zombie) postmaster would still answer kill(pid, 0) and make the new
        # postmaster believe the old one runs, so its lock files go, as an operator's would after a crash
        for lock in (self.data / "postmaster.pid", self.socket_dir / f".s.PGSQL.{self.port}.lock"):
            lock.unlink(missing_ok=True)
        return len(family)

    def admin(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host=str(self.socket_dir), port=self.port, user="postgres", dbname=dbname,
                               autocommit=True)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped (or killed)
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _children(parent: int) -> list[int]:
    out = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == parent:
            out.append(int(Path(stat).parent.name))
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class ReviewPostgres:
    """One fresh review database: ``url`` as the application role, ``owner_url`` as its owner; no password in
    either (they are in the ``PGPASSFILE`` the fixture sets)."""

    server: PostgresServer
    name: str
    url: str
    owner_url: str
    app_role: str
    owner_role: str
    passfile: Path


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory) -> PostgresServer:
    server = PostgresServer(_pg_bin_dir())
    passfile = tmp_path_factory.mktemp("pgpass") / "pgpass"
    passfile.touch(mode=0o600)
    server.passfile = passfile
    yield server
    close_pools()
    server.close()


@pytest.fixture
def review_postgres(postgres_server, monkeypatch) -> ReviewPostgres:
    """A new database with its owner and application roles, migrated to head by the owner (the app role
    granted its least privileges); ``PGPASSFILE`` holds both passwords, for this process and its children."""
    server = postgres_server
    name = f"review_{secrets.token_hex(4)}"
    owner, app = f"{name}_owner", f"{name}_app"
    passwords = {owner: secrets.token_urlsafe(16), app: secrets.token_urlsafe(16)}
    with server.admin() as conn:
        for role, password in passwords.items():
            conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f"CREATE DATABASE {name} OWNER {owner}")
    with open(server.passfile, "a") as passfile:
        for role, password in passwords.items():
            passfile.write(f"127.0.0.1:{server.port}:{name}:{role}:{password}\n")
    monkeypatch.setenv("PGPASSFILE", str(server.passfile))
    for variable in ("PGPASSWORD", "PGSERVICE", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE"):
        monkeypatch.delenv(variable, raising=False)
    base = f"postgresql://{{}}@127.0.0.1:{server.port}/{name}"
    review = ReviewPostgres(server, name, base.format(app), base.format(owner), app, owner, server.passfile)
    migrate(review.owner_url, app_role=app, actor="test-setup")
    yield review
    close_pools()
