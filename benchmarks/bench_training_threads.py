"""Time model training on the real questionnaires under several OpenMP settings.

Each setting runs in a fresh process, because OpenMP reads its environment
once. With --busy, a second process keeps one core busy during each timing,
as another job on the same machine would.

    python benchmarks/bench_training_threads.py [--busy] [--data PATH]
"""

import argparse
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "gym_churn_us.csv"

SETTINGS = {
    "OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
    "2 threads, spinning wait": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"},
    "2 threads, OMP_WAIT_POLICY=PASSIVE": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
}

_TRAIN = """
import sys, time
import pandas as pd
from gymchurn import model
from gymchurn.loader import read_questionnaire_csv
loaded = read_questionnaire_csv(sys.argv[1])
training = loaded.questionnaires.merge(loaded.outcomes, on="client_id")
training["month"] = pd.Timestamp("2026-10-01").date()
started = time.perf_counter()
model.train(training, seed=42, folds=5, threshold=0.5)
print(f"{time.perf_counter() - started:.1f}")
"""


def _spin() -> None:
    while True:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", action="store_true", help="keep one core busy meanwhile")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="questionnaire CSV")
    args = parser.parse_args()

    base = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    print(f"model.train on {args.data}, {os.cpu_count()} cores, busy core: {args.busy}")
    for label, extra in SETTINGS.items():
        spinner = multiprocessing.Process(target=_spin, daemon=True) if args.busy else None
        if spinner:
            spinner.start()
        try:
            done = subprocess.run(
                [sys.executable, "-c", _TRAIN, str(args.data)],
                env={**base, **extra},
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
        finally:
            if spinner:
                spinner.terminate()
        print(f"{label}: {done.stdout.strip()} s")


if __name__ == "__main__":
    main()
