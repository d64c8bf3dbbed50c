"""A throwaway PostgreSQL 15 server on loopback for the Prefect-on-PostgreSQL tests: initdb in a
temporary directory, `pg_ctl start` on a free port, as the `postgres` user when run as root."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from tests.s3 import free_port


def pg_bin() -> Path | None:
    """The directory of initdb/pg_ctl (Debian keeps them out of PATH), or None if not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent  # the real bin directory (createdb lives beside it)
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(dirs[-1]).parent if dirs else None


def _as_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextmanager
def loopback_postgres(db: str = "prefect"):
    """Yield a postgresql+asyncpg:// URL of a fresh database; stop and delete the server on exit."""
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install -y postgresql)")
    tmp = Path(tempfile.mkdtemp(prefix="lmops-pg-"))
    data = tmp / "data"
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres")
    port = free_port()
    run = lambda cmd: subprocess.run(_as_user(cmd), check=True, capture_output=True, text=True, cwd="/tmp")
    try:
        run([str(bindir / "initdb"), "-D", str(data), "-U", "lmops", "--auth=trust", "-E", "UTF8"])
        run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(tmp / "log"), "-w", "-t", "60",
             "-o", f"-h 127.0.0.1 -p {port} -k {tmp}", "start"])
        run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "lmops", db])
        yield f"postgresql+asyncpg://lmops@127.0.0.1:{port}/{db}"
    finally:
        subprocess.run(_as_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, cwd="/tmp")
        shutil.rmtree(tmp, ignore_errors=True)
