"""Time the monthly run on many simulated clients against a naive pipeline and the I/O floor.

Creates a database of its own on the server (default: the local one),
simulates ``--clients`` clients over ``--months`` months into it, and then
measures, each in a process of its own so that each has its own peak memory:

- ``retrain``: the monthly flow on the last month with ``retrain=always``,
  trained on the labelled earlier months (at most ``max_training_rows``);
- ``champion``: the flow again on the same month with ``retrain=never``;
- ``naive``: a notebook's pipeline on the same rows: ``pandas.read_sql``,
  a ``HistGradientBoostingClassifier`` fitted on every labelled row,
  ``predict_proba``, and ``DataFrame.to_sql`` of the scores;
- ``floor``: COPY out of the questionnaires the flow reads and COPY in of
  the rows the flow wrote to ``churn.scores``, with no work between, into a
  copy of that table with its indexes and checks but not its foreign keys.

Prints one JSON line and drops the database.

    python -m benchmarks.run [--clients 1000000] [--months 3]
        [--server-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

import argparse
import datetime as dt
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import sqlalchemy as sa  # noqa: E402

START = dt.date(2026, 1, 1)
DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _scored_month(months: int) -> dt.date:
    from gymchurn.simulation.simulator import add_months

    return add_months(START, months - 1)


def _simulate(url: sa.URL, clients: int, months: int, seed: int) -> dict:
    from gymchurn import db
    from gymchurn.simulation.simulator import ClientSimulator
    from gymchurn.simulation.store import write_simulation

    engine = sa.create_engine(url)
    started = time.perf_counter()
    db.upgrade(engine)
    summary = write_simulation(engine, ClientSimulator(clients, seed=seed), START, months)
    engine.dispose()
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "questionnaires": summary.questionnaires_written,
        "outcomes": summary.outcomes_written,
    }


def _task_seconds(flow_run_id) -> tuple[dict, float, float]:
    """Seconds of each task of a flow run, and the flow run's own seconds."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    # Chunk tasks of one step overlap: a step's seconds run from the start of its
    # first task to the end of its last.
    spans = {}
    for task_run in task_runs:
        if task_run.start_time is None or task_run.end_time is None:
            continue
        name = task_run.name.rsplit("-", 1)[0]
        first, last = spans.get(name, (task_run.start_time, task_run.end_time))
        spans[name] = (min(first, task_run.start_time), max(last, task_run.end_time))
    seconds = {
        name: round((last - first).total_seconds(), 2) for name, (first, last) in spans.items()
    }
    flow_seconds = (flow_run.end_time - flow_run.start_time).total_seconds()
    return seconds, flow_seconds, flow_run.start_time.timestamp()


def _run_flow(url: sa.URL, months: int, retrain: str, home: Path) -> dict:
    os.environ["DATABASE_URL"] = url.render_as_string(hide_password=False)
    os.environ["GYMCHURN_HOME"] = str(home)
    os.environ["GYMCHURN_MODEL_DIR"] = str(home / "models")
    os.environ["GYMCHURN_OUTPUT_DIR"] = str(home / "output")
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    started_wall = time.time()
    started = time.perf_counter()
    from flows.monthly_scoring import monthly_scoring
    from gymchurn.schema import format_month

    imported = time.perf_counter()
    state = monthly_scoring(
        month=format_month(_scored_month(months)), retrain=retrain, return_state=True
    )
    result = state.result()
    total = time.perf_counter() - started
    steps, flow_seconds, flow_started = _task_seconds(state.state_details.flow_run_id)
    return {
        "seconds": round(total, 1),
        "imports_seconds": round(imported - started, 1),
        "prefect_start_seconds": round(flow_started - started_wall - (imported - started), 1),
        "flow_seconds": round(flow_seconds, 1),
        "steps_seconds": steps,
        "rows_read": result["rows_read"],
        "rows_scored": result["rows_scored"],
        "model_decision": result["model_decision"],
        "rows_per_second": round(result["rows_read"] / flow_seconds),
    }


def _naive(url: sa.URL, months: int) -> dict:
    """A notebook's pipeline: read_sql, fit on every labelled row, predict, to_sql."""
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier

    from gymchurn.schema import FEATURES

    month = _scored_month(months)
    engine = sa.create_engine(url)
    seconds = {}
    started = time.perf_counter()
    query = (
        "SELECT q.*, o.churned FROM crm.questionnaires q LEFT JOIN crm.churn_outcomes o "
        "USING (client_id, month) WHERE q.month <= %(month)s"
    )
    frame = pd.read_sql(query, engine, params={"month": month})
    seconds["read_sql"] = time.perf_counter() - started

    mark = time.perf_counter()
    labelled = frame[frame["churned"].notna() & (frame["month"] < month)]
    classifier = HistGradientBoostingClassifier(random_state=42)
    classifier.fit(labelled[FEATURES], labelled["churned"].astype(int))
    seconds["fit"] = time.perf_counter() - mark

    mark = time.perf_counter()
    current = frame[frame["month"] == month]
    scores = pd.DataFrame(
        {
            "month": current["month"].to_numpy(),
            "client_id": current["client_id"].to_numpy(),
            "churn_probability": classifier.predict_proba(current[FEATURES])[:, 1],
        }
    )
    seconds["predict"] = time.perf_counter() - mark

    mark = time.perf_counter()
    scores.to_sql("naive_scores", engine, schema="public", if_exists="replace", index=False)
    seconds["to_sql"] = time.perf_counter() - mark
    total = time.perf_counter() - started
    engine.dispose()
    return {
        "seconds": round(total, 1),
        "steps_seconds": {name: round(value, 2) for name, value in seconds.items()},
        "rows_read": len(frame),
        "rows_written": len(scores),
        "to_sql_rows_per_second": round(len(scores) / seconds["to_sql"]),
    }


def _floor(url: sa.URL, months: int) -> dict:
    """COPY out the questionnaires a run reads, COPY in the scores it writes."""
    import psycopg

    month = _scored_month(months)
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as conn, conn.cursor() as cursor:
        scores = io.BytesIO()
        with cursor.copy(
            "COPY (SELECT * FROM churn.scores WHERE month = %s) TO STDOUT", (month,)
        ) as copy:
            for block in copy:
                scores.write(block)
        cursor.execute("CREATE TABLE public.floor_scores (LIKE churn.scores INCLUDING ALL)")
        conn.commit()

        started = time.perf_counter()
        n_bytes = 0
        statement = (
            "COPY (SELECT q.*, o.churned FROM crm.questionnaires q LEFT JOIN crm.churn_outcomes o "
            "USING (client_id, month) WHERE q.month <= %s) TO STDOUT (FORMAT CSV, HEADER)"
        )
        with cursor.copy(statement, (month,)) as copy:
            for block in copy:
                n_bytes += len(block)
        read = time.perf_counter() - started

        mark = time.perf_counter()
        with cursor.copy("COPY public.floor_scores FROM STDIN") as copy:
            copy.write(scores.getvalue())
        conn.commit()
        write = time.perf_counter() - mark
        n_scores = cursor.execute("SELECT count(*) FROM public.floor_scores").fetchone()[0]
    return {
        "seconds": round(read + write, 1),
        "copy_out_seconds": round(read, 2),
        "copy_in_seconds": round(write, 2),
        "bytes_read": n_bytes,
        "rows_written": n_scores,
    }


def _phase(args) -> dict:
    url = sa.engine.make_url(args.database_url)
    if args.phase == "simulate":
        result = _simulate(url, args.clients, args.months, args.seed)
    elif args.phase in ("retrain", "champion"):
        retrain = "always" if args.phase == "retrain" else "never"
        result = _run_flow(url, args.months, retrain, Path(args.home))
    elif args.phase == "naive":
        result = _naive(url, args.months)
    else:
        result = _floor(url, args.months)
    return {**result, "peak_rss_mib": _peak_rss_mib()}


def _run_phase(phase: str, url: sa.URL, args, home: Path) -> dict:
    command = [
        sys.executable,
        "-m",
        "benchmarks.run",
        "--phase",
        phase,
        "--database-url",
        url.render_as_string(hide_password=False),
        "--clients",
        str(args.clients),
        "--months",
        str(args.months),
        "--seed",
        str(args.seed),
        "--home",
        str(home),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-5000:])
        raise SystemExit(f"phase {phase} failed with exit code {done.returncode}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{phase}: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def _ratios(results: dict) -> dict:
    floor = results["floor"]["seconds"]
    champion = results["champion"]
    retrain = results["retrain"]
    naive = results["naive"]
    publish = champion["steps_seconds"].get("publish")
    return {
        "champion_flow_over_floor": round(champion["flow_seconds"] / floor, 2),
        "retrain_flow_over_floor": round(retrain["flow_seconds"] / floor, 2),
        "naive_over_retrain_run": round(naive["seconds"] / retrain["seconds"], 2),
        "naive_over_champion_run": round(naive["seconds"] / champion["seconds"], 2),
        "to_sql_over_publish": round(naive["steps_seconds"]["to_sql"] / publish, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument(
        "--months", type=int, default=3, help="months simulated; the last is scored"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--server-url", default=DEFAULT_SERVER)
    parser.add_argument(
        "--keep", action="store_true", help="keep the database instead of dropping it"
    )
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(_phase(args)))
        return

    server = sa.engine.make_url(args.server_url).set(drivername="postgresql+psycopg")
    name = f"scale_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = server.set(database=name)
    results = {}
    try:
        with tempfile.TemporaryDirectory(prefix="scale_") as folder:
            home = Path(folder)
            for phase in ("simulate", "retrain", "champion", "naive", "floor"):
                results[phase] = _run_phase(phase, url, args, home)
    finally:
        if not args.keep:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    print(
        json.dumps(
            {
                "clients": args.clients,
                "months": args.months,
                "cores": os.cpu_count(),
                **results,
                "ratios": _ratios(results),
            }
        )
    )


if __name__ == "__main__":
    main()
