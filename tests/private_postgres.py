"""A throw-away PostgreSQL server of the test's own, made with the machine's ``initdb`` and
``pg_ctl`` on a free port (its unix socket in its own folder too), that a test can stop —
``pg_ctl stop -m immediate``, as a crash or a pulled plug would — and start again on the
same port. The shared server on 5432 is never touched.

Run as root (CI containers), the binaries run as the ``postgres`` user, since ``initdb``
refuses root; the folder is then owned by that user.

Signals go only to this server's own live postmaster: ``stop`` checks that the pid in
``postmaster.pid`` is a running ``postgres`` of this data directory (a stale file, left by a
server that died, is removed, never used to signal a pid the system may have given to
another process since), and returns only once the postmaster and every process it had are
gone — so no process of this server outlives it to signal a recycled pid (PostgreSQL's
processes signal their postmaster and each other with SIGUSR1).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import tempfile
import time
from pathlib import Path
from types import TracebackType

SEARCHED = ("/usr/local/bin", "/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin")


def find_initdb() -> str | None:
    """``initdb`` on the PATH or where PostgreSQL packages put it; None if absent."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *SEARCHED])
    return shutil.which("initdb", path=path)


class PrivatePostgres:
    """``async with PrivatePostgres() as server``: initialised and running on
    ``server.port``; stopped and deleted at the end."""

    def __init__(self) -> None:
        initdb = find_initdb()
        if initdb is None:
            raise FileNotFoundError("initdb is not installed")
        self._bin = Path(initdb).parent
        self._folder = Path(tempfile.mkdtemp(prefix="switchboard-pg-"))
        self._data = self._folder / "data"
        self._log = self._folder / "server.log"
        self._as_postgres = os.geteuid() == 0
        self.port = _free_port()

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of its ``postgres`` database, over TCP on loopback."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    async def __aenter__(self) -> PrivatePostgres:
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self._folder, user.pw_uid, user.pw_gid)
        os.chmod(self._folder, 0o700)
        try:
            await self._run(
                "initdb",
                "-D",
                str(self._data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
            await self.start()
        except BaseException:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await self.stop()
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)

    async def start(self) -> None:
        """Start the server (again) on its port, and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self._folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        await self._run(
            "pg_ctl", "-D", str(self._data), "-l", str(self._log), "-o", options, "-w", "start"
        )

    async def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``immediate`` kills it without a clean shutdown; stopping a
        stopped server does nothing. Returns once none of its processes is left."""
        postmaster = self._postmaster()
        if postmaster is None:
            # Not running: a pid file left behind is stale, and its pid may be anyone's now.
            (self._data / "postmaster.pid").unlink(missing_ok=True)
            return
        processes = {postmaster, *_children(postmaster)}
        await self._run("pg_ctl", "-D", str(self._data), "-m", mode, "-w", "stop")
        await _all_gone(processes)

    def _postmaster(self) -> int | None:
        """The pid in ``postmaster.pid`` if it is this server's running postmaster."""
        try:
            lines = (self._data / "postmaster.pid").read_text().splitlines()
            pid, data = int(lines[0]), lines[1]
        except (FileNotFoundError, IndexError, ValueError):
            return None
        if Path(data) != self._data or not _is_postgres(pid, of=self._data):
            return None
        return pid

    @property
    def pid_file(self) -> Path:
        """The server's ``postmaster.pid`` (its first line is the postmaster's pid)."""
        return self._data / "postmaster.pid"

    def server_log(self) -> str:
        """What the server logged (for a failing test's message)."""
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    async def _run(self, program: str, *args: str) -> None:
        command = [str(self._bin / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        process = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self._folder,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({process.returncode}): {output.decode(errors='replace')}"
                f"\n{self.server_log()}"
            )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def _is_postgres(pid: int, *, of: Path) -> bool:
    """Whether ``pid`` runs ``postgres`` on the data directory ``of``."""
    if not Path("/proc").is_dir():  # no /proc to ask: trust the pid file
        return True
    command = _cmdline(pid)
    return command is not None and b"postgres" in command and os.fsencode(of) in command


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (a postmaster's backends and workers)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


async def _all_gone(pids: set[int], within: float = 15.0) -> None:
    """Wait until none of ``pids`` runs a ``postgres`` any more (a pid given to a new process
    since does not count)."""
    deadline = time.monotonic() + within
    while left := {pid for pid in pids if b"postgres" in (_cmdline(pid) or b"")}:
        if time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL processes {sorted(left)} outlived the server")
        await asyncio.sleep(0.02)
