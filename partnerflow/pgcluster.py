"""A throwaway PostgreSQL cluster for tests: initdb in a temp dir, one server on 127.0.0.1, gone on stop.

Why: `make test` must prove the records code on a real PostgreSQL, not only on SQLite, and
with nothing installed or configured by hand. The PostgreSQL server binaries of the image
(`initdb`, `pg_ctl`, found on PATH or in /usr/lib/postgresql/*/bin) are enough: this module
makes a private cluster (trust auth, listening only on 127.0.0.1 on a free port, its Unix
socket inside its own directory, fsync off for speed), creates a database and hands out its
SQLAlchemy URL. PostgreSQL refuses to run as root, so when the current user is root the
server commands run as the `postgres` OS user, in a directory that user owns.

    with ThrowawayPostgres() as pg:
        records = Records(pg.url)  # postgresql+psycopg://postgres@127.0.0.1:<port>/partnerflow
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from sqlalchemy.engine import URL

PG_USER = "postgres"  # the OS user the server runs as when we are root, and the database superuser
SEARCH_GLOB = "/usr/lib/postgresql/*/bin"
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "max_connections": "100",
    "logging_collector": "off",
}
# Trust, but only over the Unix socket in our own directory and TCP from 127.0.0.1.
_HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\n"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries (or, as root, the `postgres` user) are missing."""


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name)) or (0,)


def find_bin_dir() -> Path | None:
    """The directory holding initdb, pg_ctl and createdb: PATH first, else the newest Debian install."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += sorted((Path(p) for p in glob.glob(SEARCH_GLOB)), key=_version_key, reverse=True)
    for bin_dir in candidates:
        if all(os.access(bin_dir / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "createdb", "postgres")):
            return bin_dir
    return None


def _is_root() -> bool:
    return os.geteuid() == 0


def _postgres_user() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        return None


def available() -> bool:
    """True when a throwaway cluster can be made here (binaries found; as root, a `postgres` user)."""
    if find_bin_dir() is None:
        return False
    return not _is_root() or _postgres_user() is not None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ThrowawayPostgres:
    """One private PostgreSQL server and database; a context manager, or `start()` / `stop()`."""

    def __init__(self, database: str = "partnerflow", *, start_timeout_s: int = 60) -> None:
        if not _NAME.fullmatch(database):
            raise ValueError(f"database name must match {_NAME.pattern}: {database!r}")
        self.database = database
        self.start_timeout_s = start_timeout_s
        self.directory: Path | None = None
        self.port: int | None = None
        self._bin: Path | None = None
        self._running = False

    # --- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Self:
        if self.directory is not None:
            raise RuntimeError("already started")
        self._bin = find_bin_dir()
        if self._bin is None:
            raise PostgresUnavailable(f"initdb/pg_ctl not found on PATH or in {SEARCH_GLOB}")
        owner = _postgres_user() if _is_root() else None
        if _is_root() and owner is None:
            raise PostgresUnavailable(f"running as root and there is no {PG_USER!r} OS user to run the server")
        # mkdtemp makes it 0700; hand it to postgres when we are root (the server insists on owning it).
        self.directory = Path(tempfile.mkdtemp(prefix="partnerflow-pg-"))
        atexit.register(self.stop)
        try:
            if owner is not None:
                os.chown(self.directory, owner.pw_uid, owner.pw_gid)
            self._initdb()
            self._start_server()
            self.create_database(self.database)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server at once (`-m immediate`: nothing is worth keeping) and delete its directory."""
        directory, self.directory = self.directory, None
        if directory is None:
            return
        atexit.unregister(self.stop)
        try:
            if self._running:
                self._running = False
                self._run([self._tool("pg_ctl"), "stop", "-D", str(directory / "data"), "-m", "immediate", "-w"])
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    # --- what tests use ----------------------------------------------------------------
    @property
    def url(self) -> str:
        """SQLAlchemy URL of the database: `postgresql+psycopg://postgres@127.0.0.1:<port>/<database>`."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        if self.port is None or not self._running:
            raise RuntimeError("not started")
        url = URL.create("postgresql+psycopg", username=PG_USER, host="127.0.0.1", port=self.port, database=database)
        return url.render_as_string(hide_password=False)

    def create_database(self, name: str) -> str:
        """Create another (empty) database in this cluster and return its URL: one per test, if wanted."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"database name must match {_NAME.pattern}: {name!r}")
        # Over TCP with trust auth: works as any OS user, no need to drop privileges.
        self._run(
            [self._tool("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, name],
            as_server_user=False,
        )
        return self.url_for(name)

    def pause(self) -> None:
        """Take the server down (an outage); `resume()` brings it back on the same port."""
        if self.directory is None or not self._running:
            raise RuntimeError("not started")
        self._run([self._tool("pg_ctl"), "stop", "-D", str(self.directory / "data"), "-m", "fast", "-w"])
        self._running = False

    def resume(self) -> None:
        if self.directory is None or self._running or self.port is None:
            raise RuntimeError("not paused")
        data, log = self.directory / "data", self.directory / "server.log"
        self._run(
            [
                self._tool("pg_ctl"),
                *("start", "-w", "-t", str(self.start_timeout_s)),
                *("-D", str(data), "-l", str(log), "-o", f"-p {self.port}"),
            ]
        )
        self._running = True

    # --- internals ---------------------------------------------------------------------
    def _tool(self, name: str) -> str:
        assert self._bin is not None
        return str(self._bin / name)

    def _run(self, args: Sequence[str], *, as_server_user: bool = True) -> str:
        command = list(args)
        if as_server_user and _is_root():
            runuser = shutil.which("runuser")
            if runuser:
                command = [runuser, "-u", PG_USER, "--", *command]
            else:
                command = ["su", PG_USER, "-s", "/bin/sh", "-c", shlex.join(command)]
        env = {**os.environ, "LC_ALL": "C", "PGTZ": "UTC"}
        env.pop("PGDATA", None)
        result = subprocess.run(
            command,
            cwd=self.directory,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=self.start_timeout_s + 30,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result.stdout

    def _initdb(self) -> None:
        assert self.directory is not None
        data = self.directory / "data"
        self._run(
            [
                self._tool("initdb"),
                *("-D", str(data), "-U", PG_USER, "-A", "trust", "--no-sync"),
                *("-E", "UTF8", "--locale=C", "--no-instructions"),
            ]
        )
        # The files belong to postgres; writing into them as root keeps their owner.
        (data / "pg_hba.conf").write_text(_HBA)
        settings = {**_SETTINGS, "unix_socket_directories": f"'{self.directory}'"}
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("\n# partnerflow.pgcluster: a throwaway test cluster\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def _start_server(self) -> None:
        assert self.directory is not None
        log = self.directory / "server.log"
        # A free port can be taken between our probe and the server's bind: try a few.
        for attempt in range(5):
            port = _free_port()
            try:
                self._run(
                    [
                        self._tool("pg_ctl"),
                        *("start", "-w", "-t", str(self.start_timeout_s)),
                        *("-D", str(self.directory / "data"), "-l", str(log), "-o", f"-p {port}"),
                    ]
                )
            except RuntimeError as error:
                server_log = log.read_text(errors="replace") if log.exists() else ""
                if "could not bind" in server_log and attempt < 4:
                    log.unlink(missing_ok=True)
                    continue
                raise RuntimeError(f"{error}\nserver log:\n{server_log}") from None
            self.port = port
            self._running = True
            return


__all__ = ["PostgresUnavailable", "ThrowawayPostgres", "available", "find_bin_dir"]
