"""Time the monthly run on many simulated clients against a naive pipeline and the I/O floor.

Creates a database of its own on the server (default: the local one),
simulates ``--clients`` clients over ``--months`` months into it, and then
measures, each in a process of its own so that each has its own peak memory:

- ``retrain``: the monthly flow on the last month with ``retrain=always``,
  trained on the labelled earlier months (at most ``max_training_rows``);
- ``champion``: the flow again on the same month with ``retrain=never``;
- ``write``: the flow's write step alone on the rows the champion run
  published (COPY into the month's new table, then its indexes and the
  partition swap), and ``DataFrame.to_sql`` of the same rows' month,
  client_id, churn_probability, risk_tier, cluster_id and reasons (as text)
  into a table with the indexes ``churn.scores`` has on those columns, and
  into a new table without indexes;
- ``naive``: the pipeline of the published analyses of this questionnaire
  data. It reads with ``pandas.read_sql``, fits ``StandardScaler`` with
  ``LogisticRegression`` and a ``RandomForestClassifier`` with default
  settings, and keeps the one with the higher ROC-AUC on a 20 % test split.
  It fits ``KMeans`` with 5 clusters on the standardised features, calls
  ``predict_proba``, and writes with ``DataFrame.to_sql`` the columns the
  ``write`` phase writes with ``to_sql``. The forest is fitted on
  every training row, or on a seeded sample of ``--naive-forest-rows``.
  The reasons it writes are the champion run's, read before the clock
  starts, so that ``to_sql`` writes rows of the same size;
- ``floor``: COPY out of the questionnaires the flow reads (the month's,
  and the sample of earlier labelled rows it draws to train on, with the
  flow's own queries) and COPY in of the rows the flow wrote to
  ``churn.scores``, with no work between, into a copy of that table with its
  indexes and checks but not its foreign keys. The ``bare`` floor COPYs the
  same rows into a copy without indexes.

Prints one JSON line and drops the database.

    python -m benchmarks.run [--clients 1000000] [--months 3] [--skip-naive]
        [--server-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
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
# Training rows of the naive phase's random forest. 0 fits it on all of them,
# as the published analyses do. On the 2-core machine of docs/benchmarks.md
# the forest took 2.4 s on 25,000 rows and 15.7 s on 100,000.
NAIVE_FOREST_ROWS = 0
NAIVE_CLUSTERS = 5
# The table to_sql appends to in the write phase. It has the indexes
# churn.scores has on these columns, so both writes land in an indexed table.
TO_SQL_TABLE = """
    CREATE TABLE public.write_to_sql (
        month date NOT NULL,
        client_id bigint NOT NULL,
        churn_probability double precision NOT NULL,
        risk_tier text NOT NULL,
        cluster_id smallint NOT NULL,
        reasons text,
        PRIMARY KEY (month, client_id)
    )
"""
TO_SQL_INDEXES = [
    "CREATE INDEX ON public.write_to_sql (month, risk_tier, cluster_id)",
    "CREATE INDEX ON public.write_to_sql (month, churn_probability DESC, client_id) "
    "WHERE risk_tier = 'high'",
]
SEED = 42
TASK_RUNS_PAGE = 200


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _scored_month(months: int) -> dt.date:
    from gymchurn.simulation.simulator import add_months

    return add_months(START, months - 1)


def _conninfo(url: sa.URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


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
        # The API returns at most 200 task runs a request (its default limit), fewer
        # than the chunk tasks of ten million clients, so read page after page.
        task_runs = []
        while True:
            page = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                limit=TASK_RUNS_PAGE,
                offset=len(task_runs),
            )
            task_runs += page
            if len(page) < TASK_RUNS_PAGE:
                break
    # Chunk tasks of one step overlap: a step's seconds run from the start of its
    # first task to the end of its last.
    spans = {}
    for task_run in task_runs:
        if task_run.start_time is None or task_run.end_time is None:
            continue
        name = task_run.name.rsplit("-", 1)[0]
        first, last = spans.get(name, (task_run.start_time, task_run.end_time))
        spans[name] = (min(first, task_run.start_time), max(last, task_run.end_time))
    flow_seconds = (flow_run.end_time - flow_run.start_time).total_seconds()
    spans = {name: (first.timestamp(), last.timestamp()) for name, (first, last) in spans.items()}
    return spans, flow_seconds, flow_run.start_time.timestamp()


class _RssSampler(threading.Thread):
    """Thread that samples resident memory every ``interval`` seconds.

    Each sample contains this process's RSS and that of its worker processes
    (joblib's, which fit the training folds), but not the Prefect server's.
    """

    def __init__(self, interval: float = 0.1):
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        import psutil

        process = psutil.Process()
        while not self._stop_event.is_set():
            workers = 0
            for child in process.children(recursive=True):
                try:
                    if any("joblib" in part or "loky" in part for part in child.cmdline()):
                        workers += child.memory_info().rss
                except psutil.Error:
                    continue
            self.samples.append((time.time(), process.memory_info().rss, workers))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def peak_mib(self, first: float, last: float) -> float | None:
        inside = [rss for at, rss, _ in self.samples if first <= at <= last]
        return round(max(inside) / 2**20, 1) if inside else None

    def peak_with_workers_mib(self) -> float | None:
        totals = [rss + workers for _, rss, workers in self.samples]
        return round(max(totals) / 2**20, 1) if totals else None


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
    sampler = _RssSampler()
    sampler.start()
    state = monthly_scoring(
        month=format_month(_scored_month(months)), retrain=retrain, return_state=True
    )
    result = state.result()
    total = time.perf_counter() - started
    sampler.stop()
    spans, flow_seconds, flow_started = _task_seconds(state.state_details.flow_run_id)
    steps = {name: round(last - first, 2) for name, (first, last) in spans.items()}
    step_peaks = {name: sampler.peak_mib(first, last) for name, (first, last) in spans.items()}
    prefect_start = flow_started - started_wall - (imported - started)
    return {
        "seconds": round(total, 1),
        "imports_seconds": round(imported - started, 1),
        "prefect_start_seconds": round(prefect_start, 1),
        "run_without_prefect_start_seconds": round(total - prefect_start, 1),
        "flow_seconds": round(flow_seconds, 1),
        "steps_seconds": steps,
        "steps_peak_rss_mib": step_peaks,
        "peak_rss_with_workers_mib": sampler.peak_with_workers_mib(),
        "rows_read": result["rows_read"],
        "rows_scored": result["rows_scored"],
        "model_decision": result["model_decision"],
        "rows_per_second": round(result["rows_read"] / flow_seconds),
    }


def _published_scores(url: sa.URL, month: dt.date):
    """Read the month's published score rows, with reasons in the flow's in-memory form.

    The rows are fetched 100,000 at a time, and equal values of the text
    columns share one object, so that 10,000,000 rows fit in a few GiB. The
    reasons become a categorical of each client's phrases joined, as
    :func:`gymchurn.reasons.phrase_sets` returns them.

    Returns:
        The rows, the run that published them and its model version.
    """
    import numpy as np
    import pandas as pd
    import psycopg

    from gymchurn.reasons import SEPARATOR

    query = (
        "SELECT client_id, churn_probability, risk_tier, cluster_id, reasons,"
        " suggested_action, holdout, run_id, model_version FROM churn.scores"
        " WHERE month = %s ORDER BY client_id"
    )
    shared: dict = {}

    def objects(values) -> pd.Series:
        return pd.Series([shared.setdefault(value, value) for value in values], dtype=object)

    parts = []
    runs = set()
    with psycopg.connect(_conninfo(url)) as conn, conn.cursor(name="published") as cursor:
        cursor.itersize = 100_000
        cursor.execute(query, (month,))
        while rows := cursor.fetchmany(100_000):
            client, probability, tier, cluster, reasons, action, holdout, run, version = zip(
                *rows, strict=True
            )
            parts.append(
                pd.DataFrame(
                    {
                        "client_id": np.array(client, dtype="int64"),
                        "churn_probability": np.array(probability, dtype="float64"),
                        "risk_tier": objects(tier),
                        "cluster_id": np.array(cluster, dtype="int16"),
                        "reasons": objects(map(SEPARATOR.join, reasons)),
                        "suggested_action": objects(action),
                        "holdout": np.array(holdout, dtype="bool"),
                    }
                )
            )
            runs.update(zip(run, version, strict=True))
    ((run_id, version),) = runs
    published = pd.concat(parts, ignore_index=True)
    published["reasons"] = published["reasons"].astype("category")
    return published, run_id, version


def _to_sql_rows(month: dt.date, scores):
    """Return the columns ``to_sql`` writes: the score columns with the reasons as text."""
    import pandas as pd

    return pd.DataFrame(
        {
            "month": month,
            "client_id": scores["client_id"].to_numpy(),
            "churn_probability": scores["churn_probability"].to_numpy(),
            "risk_tier": scores["risk_tier"].to_numpy(),
            "cluster_id": scores["cluster_id"].to_numpy(),
            "reasons": scores["reasons"].to_numpy(),
        }
    )


def _write(url: sa.URL, months: int, with_to_sql: bool) -> dict:
    """Time the flow's write step, and ``to_sql``, on the rows the champion run published."""
    from gymchurn import steps

    month = _scored_month(months)
    published, run_id, version = _published_scores(url, month)
    engine = sa.create_engine(url)

    started = time.perf_counter()
    with engine.begin() as conn:
        n_rows = steps.stage_scores(conn, month, run_id, version, published)
        copied = time.perf_counter()
        steps.index_scores(conn, month)
        indexed = time.perf_counter()
        steps.swap_in_scores(conn, month)
        swapped = time.perf_counter()
    committed = time.perf_counter()
    write_seconds = committed - started
    result = {
        "rows": n_rows,
        "write_step_seconds": round(write_seconds, 2),
        "copy_seconds": round(copied - started, 2),
        "index_and_swap_seconds": round(swapped - copied, 2),
        "swap_seconds": round(swapped - indexed, 3),
        "commit_seconds": round(committed - swapped, 2),
    }
    if with_to_sql:
        rows = _to_sql_rows(month, published)
        with engine.begin() as conn:
            conn.exec_driver_sql(TO_SQL_TABLE)
            for statement in TO_SQL_INDEXES:
                conn.exec_driver_sql(statement)
        mark = time.perf_counter()
        rows.to_sql("write_to_sql", engine, schema="public", if_exists="append", index=False)
        to_sql = time.perf_counter() - mark
        mark = time.perf_counter()
        rows.to_sql("write_to_sql_bare", engine, schema="public", if_exists="replace", index=False)
        to_sql_bare = time.perf_counter() - mark
        result.update(
            to_sql_seconds=round(to_sql, 2),
            to_sql_over_write_step=round(to_sql / write_seconds, 2),
            to_sql_bare_seconds=round(to_sql_bare, 2),
            to_sql_bare_over_copy=round(to_sql_bare / (copied - started), 2),
        )
    engine.dispose()
    return result


def _naive(url: sa.URL, months: int, forest_rows: int) -> dict:
    """Run the published analyses' pipeline: read_sql, two models, k-means, predict, to_sql."""
    import numpy as np
    import pandas as pd
    from sklearn.cluster import KMeans
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from gymchurn.schema import FEATURES

    month = _scored_month(months)
    published, _, _ = _published_scores(url, month)
    reasons = pd.Series(published["reasons"].to_numpy(), index=published["client_id"])
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
    X_train, X_test, y_train, y_test = train_test_split(
        labelled[FEATURES],
        labelled["churned"].astype(int),
        test_size=0.2,
        random_state=SEED,
        stratify=labelled["churned"],
    )
    scaler = StandardScaler().fit(X_train)
    logistic = LogisticRegression(random_state=SEED).fit(scaler.transform(X_train), y_train)
    seconds["fit_logistic_regression"] = time.perf_counter() - mark

    mark = time.perf_counter()
    sample = np.random.default_rng(SEED).permutation(len(X_train))[: forest_rows or None]
    forest = RandomForestClassifier(random_state=SEED).fit(
        X_train.iloc[sample], y_train.iloc[sample]
    )
    seconds["fit_random_forest"] = time.perf_counter() - mark

    mark = time.perf_counter()
    roc_auc = {
        "logistic_regression": roc_auc_score(
            y_test, logistic.predict_proba(scaler.transform(X_test))[:, 1]
        ),
        "random_forest": roc_auc_score(y_test, forest.predict_proba(X_test)[:, 1]),
    }
    chosen = max(roc_auc, key=roc_auc.get)
    seconds["compare"] = time.perf_counter() - mark

    mark = time.perf_counter()
    current = frame[frame["month"] == month]
    if chosen == "logistic_regression":
        probabilities = logistic.predict_proba(scaler.transform(current[FEATURES]))[:, 1]
    else:
        probabilities = forest.predict_proba(current[FEATURES])[:, 1]
    seconds["predict"] = time.perf_counter() - mark

    mark = time.perf_counter()
    standardised = StandardScaler().fit_transform(current[FEATURES])
    clusters = KMeans(n_clusters=NAIVE_CLUSTERS, random_state=SEED).fit_predict(standardised)
    seconds["kmeans"] = time.perf_counter() - mark

    mark = time.perf_counter()
    tiers = np.select([probabilities >= 0.5, probabilities >= 0.25], ["high", "medium"], "low")
    scores = pd.DataFrame(
        {
            "client_id": current["client_id"].to_numpy(),
            "churn_probability": probabilities,
            "risk_tier": tiers,
            "cluster_id": clusters,
            "reasons": reasons.reindex(current["client_id"]).fillna("").to_numpy(),
        }
    )
    rows = _to_sql_rows(month, scores)
    rows.to_sql("naive_scores", engine, schema="public", if_exists="replace", index=False)
    seconds["to_sql"] = time.perf_counter() - mark
    total = time.perf_counter() - started
    engine.dispose()
    return {
        "seconds": round(total, 1),
        "steps_seconds": {name: round(value, 2) for name, value in seconds.items()},
        "rows_read": len(frame),
        "training_rows": len(X_train),
        "forest_training_rows": len(sample),
        "test_roc_auc": {name: round(value, 4) for name, value in roc_auc.items()},
        "model_kept": chosen,
        "rows_written": len(rows),
        "to_sql_rows_per_second": round(len(rows) / seconds["to_sql"]),
    }


def _copy_file_in(conn, cursor, rows, table: str) -> float:
    """COPY the COPY-format ``rows`` file into ``table`` and commit; return the seconds taken."""
    started = time.perf_counter()
    rows.seek(0)
    with cursor.copy(f"COPY {table} FROM STDIN") as copy:
        while block := rows.read(1 << 20):
            copy.write(block)
    conn.commit()
    return time.perf_counter() - started


def _job_reads(month: dt.date, months: int) -> list[tuple[str, dict]]:
    """Return the query files whose rows a run COPYs out, with their parameters.

    They read the month's questionnaires and the sample of labelled rows of the
    earlier months that a run draws to train on, of the size the settings in
    the environment give.
    """
    from gymchurn import history
    from gymchurn.settings import get_settings
    from gymchurn.simulation.simulator import add_months

    settings = get_settings()
    earlier = [add_months(month, -offset) for offset in range(1, months)]
    sample = {
        "months": sorted(earlier),
        "n_rows": history.candidate_rows(settings.max_training_rows, settings.max_invalid_share),
        "seed": settings.random_seed,
    }
    return [("questionnaires_for_month", {"month": month}), ("labelled_sample_of_months", sample)]


def _copy_out_bytes(cursor, name: str, params: dict) -> int:
    """COPY the rows of query file ``name`` out as CSV, and count the bytes without parsing."""
    from gymchurn import db

    n_bytes = 0
    with cursor.copy(db.copy_out_statement(name), params) as copy:
        for block in copy:
            n_bytes += len(block)
    return n_bytes


def _floor(url: sa.URL, months: int) -> dict:
    """COPY out the questionnaires a run reads, COPY in the scores it writes."""
    import psycopg

    month = _scored_month(months)
    with (
        psycopg.connect(_conninfo(url)) as conn,
        conn.cursor() as cursor,
        tempfile.TemporaryFile() as scores,
    ):
        with cursor.copy(
            "COPY (SELECT * FROM churn.scores WHERE month = %s) TO STDOUT", (month,)
        ) as copy:
            for block in copy:
                scores.write(block)
        cursor.execute("CREATE TABLE public.floor_scores (LIKE churn.scores INCLUDING ALL)")
        conn.commit()

        started = time.perf_counter()
        reads = _job_reads(month, months)
        n_bytes = sum(_copy_out_bytes(cursor, name, params) for name, params in reads)
        read = time.perf_counter() - started

        write = _copy_file_in(conn, cursor, scores, "public.floor_scores")
        n_scores = cursor.execute("SELECT count(*) FROM public.floor_scores").fetchone()[0]

        # The same COPY into a table without indexes, as the write step's first half does.
        cursor.execute(
            "CREATE TABLE public.floor_scores_bare "
            "(LIKE churn.scores INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        conn.commit()
        write_bare = _copy_file_in(conn, cursor, scores, "public.floor_scores_bare")
    return {
        "seconds": round(read + write, 1),
        "bare_seconds": round(read + write_bare, 1),
        "copy_out_seconds": round(read, 2),
        "copy_in_seconds": round(write, 2),
        "copy_in_bare_seconds": round(write_bare, 2),
        "bytes_read": n_bytes,
        "rows_written": n_scores,
    }


def _phase(args) -> dict:
    url = sa.engine.make_url(args.database_url)
    load_before = os.getloadavg()[0]
    if args.phase == "simulate":
        result = _simulate(url, args.clients, args.months, args.seed)
    elif args.phase in ("retrain", "champion"):
        retrain = "always" if args.phase == "retrain" else "never"
        result = _run_flow(url, args.months, retrain, Path(args.home))
    elif args.phase == "write":
        result = _write(url, args.months, with_to_sql=not args.skip_naive)
    elif args.phase == "naive":
        result = _naive(url, args.months, args.naive_forest_rows)
    else:
        result = _floor(url, args.months)
    return {
        **result,
        "peak_rss_mib": _peak_rss_mib(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


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
        "--naive-forest-rows",
        str(args.naive_forest_rows),
        "--home",
        str(home),
        *(["--skip-naive"] if args.skip_naive else []),
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
    write = results["write"]
    bare_floor = results["floor"]["bare_seconds"]
    ratios = {
        "champion_flow_over_floor": round(champion["flow_seconds"] / floor, 2),
        "retrain_flow_over_floor": round(retrain["flow_seconds"] / floor, 2),
        "champion_flow_over_bare_floor": round(champion["flow_seconds"] / bare_floor, 2),
        "retrain_flow_over_bare_floor": round(retrain["flow_seconds"] / bare_floor, 2),
    }
    if "to_sql_seconds" in write:
        ratios["to_sql_over_write_step"] = write["to_sql_over_write_step"]
        ratios["to_sql_over_publish_step"] = round(
            write["to_sql_seconds"] / champion["steps_seconds"]["publish"], 2
        )
    if "naive" in results:
        naive = results["naive"]["seconds"]
        ratios["naive_over_champion_run"] = round(
            naive / champion["run_without_prefect_start_seconds"], 2
        )
        ratios["naive_over_retrain_run"] = round(
            naive / retrain["run_without_prefect_start_seconds"], 2
        )
    return ratios


def _create_database(admin, name: str) -> None:
    from psycopg import sql

    raw = admin.connection.driver_connection
    raw.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _drop_database(admin, name: str) -> None:
    from psycopg import sql

    raw = admin.connection.driver_connection
    raw.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument(
        "--months", type=int, default=3, help="months simulated; the last is scored"
    )
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--server-url", default=DEFAULT_SERVER)
    parser.add_argument(
        "--database-prefix",
        default="scale_",
        help="start of the name of the database created for the run (default: scale_)",
    )
    parser.add_argument(
        "--skip-naive",
        action="store_true",
        help="leave out the naive pipeline and to_sql (for 10M runs, where to_sql alone "
        "would hold every row as a dict)",
    )
    parser.add_argument(
        "--naive-forest-rows",
        type=int,
        default=NAIVE_FOREST_ROWS,
        help="training rows of the naive random forest (default: 0, all of them)",
    )
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
    name = f"{args.database_prefix}{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        _create_database(conn, name)
    url = server.set(database=name)
    phases = ["simulate", "retrain", "champion", "write", "naive", "floor"]
    if args.skip_naive:
        phases.remove("naive")
    results = {}
    try:
        with tempfile.TemporaryDirectory(prefix="scale_") as folder:
            home = Path(folder)
            for phase in phases:
                results[phase] = _run_phase(phase, url, args, home)
    finally:
        if not args.keep:
            with admin.connect() as conn:
                _drop_database(conn, name)
        admin.dispose()
    print(
        json.dumps(
            {
                "clients": args.clients,
                "months": args.months,
                "cores": os.cpu_count(),
                "database": name if args.keep else None,
                **results,
                "ratios": _ratios(results),
            }
        )
    )


if __name__ == "__main__":
    main()
