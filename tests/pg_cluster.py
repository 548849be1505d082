"""A PostgreSQL server of the test's own, which the test may stop, start and restart (fault tests; the
`pg_cluster` fixture in tests/conftest.py).

scripts/with-postgres.sh gives a URL to a shared server; a test that takes the server down needs one
nobody else uses. Same recipe as the script: Debian's newest server binaries, trust auth on 127.0.0.1,
fsync off, and as root the cluster runs as `postgres` (initdb refuses root).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def server_bindir() -> Path | None:
    dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    return dirs[-1] if dirs and (dirs[-1] / "initdb").exists() else None


class PgCluster:
    """initdb'd into a temporary folder on a free port; `url` is its `postgres` database."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="storyloop-pgfault-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._as_pg: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            self._as_pg = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "--no-sync", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self._as_pg, str(self.bindir / tool), *args], capture_output=True, text=True,
                              check=False)
        if done.returncode:
            log = self.dir / "server.log"
            raise RuntimeError(f"{tool} failed: {done.stderr}\n{log.read_text() if log.exists() else ''}")

    def _ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "server.log"), "-w", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", *args)

    def start(self) -> None:
        self._ctl("start")

    def running(self) -> bool:
        return subprocess.run([*self._as_pg, str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "status"],
                              capture_output=True, check=False).returncode == 0

    def stop(self) -> None:
        """Fast shutdown, as a service restart does: open transactions are rolled back, clients cut off."""
        self._ctl("stop", "-m", "fast")

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def destroy(self) -> None:
        subprocess.run([*self._as_pg, str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate",
                        "stop"], capture_output=True, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
