"""Check over many simulator seeds how often the campaign interval covers the planted effect.

For each seed the script creates a database of its own on the server in
DATABASE_URL (for example postgresql://postgres@127.0.0.1:5432/postgres).
There it simulates ``--clients`` clients over ``--months`` months of the
``intervention`` scenario, with the monthly job between the months: trained
on the first scored month, the champion loaded after. It then pools the
scored months' ``overall`` rows of ``churn.campaign_results`` and drops the
database.

The script prints one line a seed, then one JSON line of the summary. It
counts the pooled 95 % intervals that contain the planted effect and those
wholly above or below it. It also gives the mean and spread of the
estimates, next to the intervals' mean standard error.

    python benchmarks/bench_campaign_coverage.py [--seeds 20] [--first-seed 1]
        [--effect 0.0] [--clients 2000] [--months 3]
"""

import argparse
import datetime as dt
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GYMCHURN_CV_FOLDS", "2")

import sqlalchemy as sa  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

START = dt.date(2026, 1, 1)
Z_95 = 1.959963984540054


def _one_seed(server: sa.URL, seed: int, args, folder: Path) -> dict:
    import pandas as pd

    from flows.monthly_scoring import monthly_scoring
    from gymchurn import db
    from gymchurn.campaigns import pool_months
    from gymchurn.schema import format_month
    from gymchurn.settings import get_settings
    from gymchurn.simulation.campaign import simulate_campaign
    from gymchurn.simulation.simulator import ClientSimulator, add_months

    name = f"gymchurn_coverage_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    os.environ["DATABASE_URL"] = server.set(database=name).render_as_string(hide_password=False)
    os.environ["GYMCHURN_MODEL_DIR"] = str(folder / f"models_{seed}")
    os.environ["GYMCHURN_OUTPUT_DIR"] = str(folder / f"output_{seed}")
    get_settings.cache_clear()
    engine = db.get_engine(get_settings())
    first_scored = format_month(add_months(START, 1))
    try:
        db.upgrade(engine)
        simulator = ClientSimulator(
            args.clients,
            seed=seed,
            scenario="intervention",
            scenario_start=START,
            contact_effect=args.effect,
        )
        simulation = simulate_campaign(
            engine,
            simulator,
            START,
            args.months,
            lambda label: monthly_scoring(
                month=label, retrain="auto" if label == first_scored else "never"
            ),
        )
        with engine.connect() as conn:
            overall = pd.read_sql(
                sa.text("SELECT * FROM churn.campaign_results WHERE level = 'overall'"), conn
            )
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    difference, lower, upper = pool_months(overall)
    planted = simulation.planted_effect()
    return {
        "seed": seed,
        "planted": round(float(planted), 4),
        "difference": round(float(difference), 4),
        "ci_lower": round(float(lower), 4),
        "ci_upper": round(float(upper), 4),
        "contacted": int(overall["contacted"].sum()),
        "held_out": int(overall["held_out"].sum()),
    }


def _summary(rows: list[dict], seconds: float) -> dict:
    errors = [(row["ci_upper"] - row["ci_lower"]) / (2 * Z_95) for row in rows]
    estimates = [row["difference"] - row["planted"] for row in rows]
    return {
        "seeds": len(rows),
        "covered": sum(row["ci_lower"] <= row["planted"] <= row["ci_upper"] for row in rows),
        "above": sum(row["ci_lower"] > row["planted"] for row in rows),
        "below": sum(row["ci_upper"] < row["planted"] for row in rows),
        "mean_error": round(statistics.mean(estimates), 4),
        "sd_of_estimates": round(statistics.stdev(estimates), 4) if len(rows) > 1 else None,
        "mean_standard_error": round(statistics.mean(errors), 4),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--effect", type=float, default=0.0)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--months", type=int, default=3)
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        sys.exit("set DATABASE_URL to a PostgreSQL server URL whose user may create databases")
    server = sa.engine.make_url(server_url).set(drivername="postgresql+psycopg")
    logging.basicConfig(level=logging.WARNING)

    from prefect.testing.utilities import prefect_test_harness

    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as folder, prefect_test_harness(server_startup_timeout=120):
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            row = _one_seed(server, seed, args, Path(folder))
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(json.dumps(_summary(rows, time.perf_counter() - started)))


if __name__ == "__main__":
    main()
