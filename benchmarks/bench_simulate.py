"""Time a large simulation written into PostgreSQL, and its peak memory.

Creates a database of its own on the server (default: the local one), runs
the simulator month by month into it as `gymchurn simulate` does, prints the
time of each month and the process's peak resident memory, then drops the
database.

    python benchmarks/bench_simulate.py [--clients 1000000] [--months 12]
        [--server-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

import argparse
import datetime as dt
import os
import resource
import time
import uuid

os.environ.setdefault("OMP_NUM_THREADS", "1")

import sqlalchemy as sa  # noqa: E402

from gymchurn import db  # noqa: E402
from gymchurn.schema import format_month  # noqa: E402
from gymchurn.simulation.simulator import ClientSimulator  # noqa: E402
from gymchurn.simulation.store import write_simulation  # noqa: E402


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--server-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()

    server = sa.engine.make_url(args.server_url).set(drivername="postgresql+psycopg")
    name = f"gymchurn_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine = sa.create_engine(server.set(database=name))
    try:
        db.upgrade(engine)
        print(f"simulate {args.clients} clients x {args.months} months, {os.cpu_count()} cores")
        started = last = time.perf_counter()

        def report(simulated):
            nonlocal last
            now = time.perf_counter()
            print(
                f"{format_month(simulated.month)}: {len(simulated.questionnaires)} clients, "
                f"{now - last:.1f} s, peak RSS {_peak_rss_mib():.0f} MiB",
                flush=True,
            )
            last = now

        simulator = ClientSimulator(args.clients, seed=args.seed)
        summary = write_simulation(
            engine, simulator, dt.date(2026, 1, 1), args.months, on_month=report
        )
        total = time.perf_counter() - started
        print(
            f"total {total:.1f} s including the commit: {summary.questionnaires_written} "
            f"questionnaires and {summary.outcomes_written} outcomes, "
            f"{summary.questionnaires_written / total:.0f} questionnaires/s, "
            f"peak RSS {_peak_rss_mib():.0f} MiB"
        )
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


if __name__ == "__main__":
    main()
