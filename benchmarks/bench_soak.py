"""Run many simulated months back to back on one database and check they agree.

The script creates a database of its own on the server in DATABASE_URL (for
example postgresql://postgres@127.0.0.1:5432/postgres) and simulates the
months. Then one ``gymchurn run --retrain auto`` process scores every month
in turn. The script prints the time and row counts of every month, and exits
with 1 when the run records, the published rows and the model registry
disagree. The database is dropped at the end, and the model and output files
are removed unless --keep is given.

    python benchmarks/bench_soak.py [--months 24] [--clients 1500] [--keep]
"""

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.consistency import find_inconsistencies  # noqa: E402

_MONTH_LINE = re.compile(r"^(\d{4}-\d{2}): (\d+) read, (\d+) scored, (\d+) quarantined", re.M)


def _month_labels(start: str, months: int) -> list[str]:
    first = dt.date.fromisoformat(f"{start}-01")
    index = first.year * 12 + first.month - 1
    return [f"{(index + i) // 12:04d}-{(index + i) % 12 + 1:02d}" for i in range(months)]


def _gymchurn(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gymchurn.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )


def soak(server_url: str, months: int, clients: int, folder: Path) -> int:
    """Simulate and run ``months`` months in a new database; return the process exit code."""
    server = sa.engine.make_url(server_url).set(drivername="postgresql+psycopg")
    name = f"gymchurn_soak_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = server.set(database=name)
    env = {
        **os.environ,
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "GYMCHURN_HOME": str(folder / "home"),
        "GYMCHURN_MODEL_DIR": str(folder / "models"),
        "GYMCHURN_OUTPUT_DIR": str(folder / "output"),
        "PREFECT_HOME": str(folder / "prefect"),
    }
    (folder / "prefect").mkdir(parents=True, exist_ok=True)
    labels = _month_labels("2024-01", months)
    try:
        started = time.perf_counter()
        simulated = _gymchurn(
            env,
            "simulate",
            "--clients",
            str(clients),
            "--months",
            str(months),
            "--start",
            labels[0],
        )
        if simulated.returncode != 0:
            print(simulated.stderr[-3000:])
            return 1
        print(
            f"simulate: {months} months of about {clients} clients, "
            f"{time.perf_counter() - started:.1f} s"
        )
        started = time.perf_counter()
        arguments = ["run", "--retrain", "auto"]
        for label in labels:
            arguments += ["--month", label]
        ran = _gymchurn(env, *arguments)
        seconds = time.perf_counter() - started
        (folder / "run.log").write_text(ran.stdout + ran.stderr)
        rows = _MONTH_LINE.findall(ran.stdout)
        for month, read, scored, quarantined in rows:
            print(f"{month}: {read} read, {scored} scored, {quarantined} quarantined")
        print(
            f"run: {len(rows)} of {months} months in {seconds:.1f} s "
            f"({seconds / max(len(rows), 1):.1f} s a month), exit code {ran.returncode}"
        )
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT count(*) FROM churn.model_versions"))
            print(f"model versions registered: {versions.scalar_one()}")
        problems = find_inconsistencies(engine)
        engine.dispose()
        for problem in problems:
            print(f"inconsistent: {problem}")
        if ran.returncode != 0 or problems or len(rows) != months:
            print(ran.stderr[-3000:])
            return 1
        print(
            "consistent: one succeeded run a month, none running, read = scored + "
            "quarantined, scores = the run's counts, one champion, every model file matches"
        )
        return 0
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--months", type=int, default=24, help="months to run (>= 2)")
    parser.add_argument("--clients", type=int, default=1500, help="clients in the first month")
    parser.add_argument("--keep", action="store_true", help="keep the model and output files")
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        sys.exit("set DATABASE_URL to a PostgreSQL server URL whose user may create databases")
    print(f"soak: {args.months} months, {args.clients} clients, {os.cpu_count()} cores")
    if args.keep:
        folder = Path(tempfile.mkdtemp(prefix="gymchurn-soak-"))
        print(f"files kept in {folder}")
        sys.exit(soak(server_url, args.months, args.clients, folder))
    with tempfile.TemporaryDirectory(prefix="gymchurn-soak-") as folder:
        sys.exit(soak(server_url, args.months, args.clients, Path(folder)))


if __name__ == "__main__":
    main()
