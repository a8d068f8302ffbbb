"""Time `gymchurn load-csv` on a simulated month's CSV file, and its peak memory.

Simulates one month of clients (seed 42) and writes it into a temporary
folder as the chain's CSV export: the real file's headers, a client_id column
and the Churn label, left empty on the last row as for a client whose outcome
is not known yet. Creates a database of its own on the server (default:
the local one), and loads a file of 1,000 clients into the month before.
Then runs `gymchurn load-csv` in a process of its own twice: into the empty
month, and again with the same file, which changes nothing.
Prints one JSON line, then drops the database and the file.

    python benchmarks/bench_load_csv.py [--clients 1000000]
        [--server-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from gymchurn import db
from gymchurn.schema import CHURNED, CLIENT_ID, CSV_HEADERS, FEATURES
from gymchurn.simulation.simulator import ClientSimulator

MONTH = dt.date(2026, 1, 1)


def _write_csv(path: Path, clients: int, seed: int) -> int:
    """Write one simulated month as the chain's export; return the file's size in bytes."""
    simulated = next(ClientSimulator(clients, seed=seed).months(MONTH, 1))
    frame = simulated.questionnaires.merge(simulated.outcomes, on=[CLIENT_ID, "month"])
    columns = [CLIENT_ID, *FEATURES, CHURNED]
    frame = frame[columns].assign(**{CHURNED: frame[CHURNED].astype(int).astype(str)})
    # A label the load cannot read: the load then removes any outcome stored
    # for that client, which a query over the whole file finds.
    frame.iloc[-1, frame.columns.get_loc(CHURNED)] = ""
    frame.rename(columns=CSV_HEADERS).to_csv(path, index=False)
    return path.stat().st_size


def _load(url: sa.URL, path: Path, month: str = "2026-01") -> dict:
    """Run `gymchurn load-csv` in a process of its own; return its time, peak memory and output."""
    env = {**os.environ, "DATABASE_URL": url.render_as_string(hide_password=False)}
    command = [sys.executable, "-m", "gymchurn.cli", "load-csv", str(path), "--month", month]
    started = time.perf_counter()
    # GNU time's -v report ends up on stderr, after the command's own lines.
    done = subprocess.run(
        ["/usr/bin/time", "-v", *command], env=env, capture_output=True, text=True, check=True
    )
    seconds = time.perf_counter() - started
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    return {
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(int(peak.group(1)) / 1024) if peak else None,
        "printed": done.stdout.strip().splitlines()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--server-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    if not Path("/usr/bin/time").exists():
        sys.exit("needs GNU time at /usr/bin/time for the peak memory of the load process")

    server = sa.engine.make_url(args.server_url).set(drivername="postgresql+psycopg")
    name = f"gymchurn_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = server.set(database=name)
    engine = sa.create_engine(url)
    try:
        db.upgrade(engine)
        with tempfile.TemporaryDirectory() as folder:
            # A month loaded before, as in a chain's database: the server then
            # has statistics of crm's tables, by which a new month is empty.
            earlier = Path(folder) / "earlier.csv"
            _write_csv(earlier, 1_000, args.seed)
            _load(url, earlier, "2025-12")
            path = Path(folder) / "questionnaires.csv"
            started = time.perf_counter()
            size = _write_csv(path, args.clients, args.seed)
            written = time.perf_counter() - started
            result = {
                "clients": args.clients,
                "cores": os.cpu_count(),
                "file_mib": round(size / 2**20, 1),
                "simulate_and_write_seconds": round(written, 1),
                "first_load": _load(url, path),
                "same_file_again": _load(url, path),
            }
        print(json.dumps(result))
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


if __name__ == "__main__":
    main()
