"""Time `make run` on the real questionnaires, from a fresh clone of this repository.

`make install` (the virtualenv and its packages) is timed on its own. The first
`make run` after it also initialises the embedded PostgreSQL and creates the
tables; the runs after it find them in place. The real file is one labelled
month, so every run is a backtest and runs the cross-validation.
DATABASE_URL is removed from the environment, so the embedded server is used.

    python benchmarks/bench_make_run.py [--runs 3] [--data PATH]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "gym_churn_us.csv"


def _time_make(clone: Path, env: dict, *targets: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(["make", *targets], cwd=clone, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(
            f"make {targets[0]} failed with exit code {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return seconds, done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="number of make run calls (>= 1)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="questionnaire CSV")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PREFECT_API_URL")}
    with tempfile.TemporaryDirectory(prefix="gymchurn-bench-") as folder:
        clone = Path(folder) / "gymchurn"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        print(f"make run on {args.data.resolve()} in a fresh clone, {os.cpu_count()} cores")
        seconds, _ = _time_make(clone, env, "install")
        print(f"make install (venv and packages): {seconds:.1f} s")
        for attempt in range(1, args.runs + 1):
            seconds, output = _time_make(clone, env, "run", f"DATA={args.data.resolve()}")
            kind = "first (initdb, new tables, training)" if attempt == 1 else "repeat"
            summary = re.search(r"^\d{4}-\d{2}: .*$", output, re.MULTILINE)
            print(f"run {attempt} {kind}: {seconds:.1f} s")
            if summary:
                print(f"  {summary.group(0)}")


if __name__ == "__main__":
    main()
