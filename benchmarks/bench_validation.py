"""Time the questionnaire validation on 1,000,000 rows and report its peak memory.

The rows are the real file's 4,000 rows repeated with new client ids, plus a few
damaged rows: out-of-range and null values, a conflicting client id, an exact
repeat and load faults. Every repeated row gives the same answers as 249 other
clients, so the warning rule identical_answers flags every row: a worst case for
that rule.

    python benchmarks/bench_validation.py [--rows N] [--chunk-rows N] [--vary-answers]
        [--data PATH]
"""

import argparse
import datetime as dt
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "gym_churn_us.csv"
sys.path.insert(0, str(REPO))

from gymchurn.runtime import configure_environment  # noqa: E402

configure_environment(Path(os.environ.get("GYMCHURN_HOME", "/tmp/gymchurn-bench")))

from gymchurn.loader import read_questionnaire_csv  # noqa: E402
from gymchurn.validation import validate_questionnaires  # noqa: E402

MONTH = dt.date(2026, 10, 1)


def build_rows(
    path: Path, n_rows: int, vary_answers: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Repeat the file's rows to ``n_rows`` with new ids, and damage a few of them.

    With ``vary_answers``, seeded noise is added to the three float answers
    (up to 1 to the spending, up to 0.01 to each visit frequency), so that
    repeated rows no longer give identical answers.

    Returns:
        The questionnaires and the load-fault table for their damaged cells.
    """
    loaded = read_questionnaire_csv(path)
    real = loaded.questionnaires.merge(loaded.outcomes, on="client_id", how="left")
    repeats = -(-n_rows // len(real))
    frame = pd.concat([real] * repeats, ignore_index=True).iloc[:n_rows].copy()
    frame["client_id"] = np.arange(1, n_rows + 1, dtype="int64")
    frame["month"] = [MONTH] * n_rows
    frame["churned"] = frame["churned"].astype("float64")
    if vary_answers:
        rng = np.random.default_rng(7)
        for column, noise in [
            ("avg_additional_charges_total", 1.0),
            ("avg_class_frequency_total", 0.01),
            ("avg_class_frequency_current_month", 0.01),
        ]:
            frame[column] = frame[column].to_numpy(dtype="float64") + rng.uniform(0, noise, n_rows)

    frame.loc[10, "age"] = -3
    frame.loc[20, "lifetime"] = pd.NA
    frame.loc[30, "gender"] = 2
    frame.loc[40, ["contract_period", "month_to_end_contract"]] = [6, 7]
    frame.loc[50, "client_id"] = 7
    frame.loc[60:64, "avg_class_frequency_total"] = np.nan
    frame = pd.concat([frame, frame.iloc[[100]]], ignore_index=True)
    frame["row_number"] = np.arange(1, len(frame) + 1, dtype="int64")

    fault_rows = [60, 61, 62, 63, 64]
    faults = pd.DataFrame(
        {
            "client_id": frame.loc[fault_rows, "client_id"].to_numpy(),
            "column": "avg_class_frequency_total",
            "line": [row + 2 for row in fault_rows],
            "raw_value": "1,5,2",
            "fault": "not_a_number",
        }
    )
    return frame, faults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to build from the file")
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=None,
        help="rows Great Expectations checks at once (default: all of them)",
    )
    parser.add_argument(
        "--vary-answers",
        action="store_true",
        help="add seeded noise to the float answers, so that rows do not repeat answers",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="questionnaire CSV")
    args = parser.parse_args()

    frame, faults = build_rows(args.data, args.rows, args.vary_answers)
    slices = "at once" if args.chunk_rows is None else f"in slices of {args.chunk_rows:,}"
    print(f"validate_questionnaires on {len(frame):,} rows {slices}, {os.cpu_count()} cores")
    # A first call on a few rows creates the GX context, so the timing below is
    # the validation alone.
    validate_questionnaires(frame.iloc[:100], dataset="warm-up", max_invalid_share=1.0)

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    started = time.perf_counter()
    report = validate_questionnaires(
        frame, dataset="benchmark", faults=faults, chunk_rows=args.chunk_rows
    )
    elapsed = time.perf_counter() - started
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    print(f"time: {elapsed:.1f} s (with tracemalloc on)")
    print(f"peak memory allocated during the call (tracemalloc): {traced_peak / 2**20:.0f} MiB")
    # ru_maxrss is in KiB on Linux.
    print(
        f"process peak RSS: {rss_after / 2**10:.0f} MiB "
        f"({rss_before / 2**10:.0f} MiB before the call)"
    )
    print(f"frame size: {frame.memory_usage(deep=True).sum() / 2**20:.0f} MiB")
    print(report.summary())

    started = time.perf_counter()
    validate_questionnaires(frame, dataset="benchmark", faults=faults, chunk_rows=args.chunk_rows)
    print(f"time without tracemalloc: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
