"""Process environment for Prefect and Great Expectations.

Both read their settings from the environment when first imported, so
``configure_environment`` must run before either is imported.
"""

import ctypes
import ctypes.util
import logging
import os
import re
from functools import cache
from pathlib import Path

# Defaults for a process that runs the job; a value already set by the user wins.
_DEFAULTS = {
    # No usage analytics or telemetry leaves the machine.
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    # One OpenMP thread for scikit-learn unless the user asks for more, because
    # on 2 cores training on the 4,000 real rows took 1.0 s on one thread and
    # 1.6 s on two. With another busy process, two spinning threads took 52 s
    # (benchmarks/bench_training_threads.py). OpenMP reads this at import.
    "OMP_NUM_THREADS": "1",
    # The package logs through the standard logging module; route it into
    # the flow-run logs.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "gymchurn",
    # Package functions also run outside flows (load-csv, tests, notebooks),
    # where there is no flow run to send their records to.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    # The temporary Prefect server takes 5-11 s to start on a 2-core machine;
    # Prefect's default limit of 20 s is too close for a loaded CI runner.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


# Names of the signals that asked this process to stop, in arrival order.
received_signals: list[str] = []


def raise_if_stopped() -> None:
    """Raise the stop of a signal already received, in case Python dropped it.

    The job's signal handler raises KeyboardInterrupt wherever the main thread
    is. When that is a callback whose exceptions Python ignores (a lock of
    the import system, a finaliser), the exception is printed as ignored and
    the run would go on. The flow calls this between its steps.
    """
    if received_signals:
        raise KeyboardInterrupt(f"stopped by signal {received_signals[0]}")


# Months whose run was stopped after its publish transaction had committed.
published_before_stop: list[str] = []


def configure_environment(home: Path) -> None:
    """Set the environment defaults, with Prefect's files under ``home/prefect``."""
    for name, value in _DEFAULTS.items():
        os.environ.setdefault(name, value)
    if "PREFECT_HOME" not in os.environ:
        prefect_home = (home / "prefect").resolve()
        # Prefect's temporary server fails to open its SQLite file in a missing folder.
        prefect_home.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(prefect_home)


@cache
def _c_library():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except OSError:
        return None


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system, where glibc can.

    glibc keeps freed blocks of up to 32 MB in its heap rather than unmapping
    them once a larger block has been freed, so a step's temporary arrays
    would otherwise stay in the process's resident memory. At 2,000,000
    simulated clients this gave back 100 to 130 MiB after each large step.
    Elsewhere (another C library, macOS) it does nothing.
    """
    library = _c_library()
    trim = getattr(library, "malloc_trim", None) if library is not None else None
    if trim is not None:
        trim(0)


# The prctl option by which the kernel signals this process when its parent dies.
_PR_SET_PDEATHSIG = 1


def stop_with_parent(signum: int, parent_pid: int) -> bool:
    """Have the kernel send ``signum`` to this process when its parent ``parent_pid`` dies.

    A parent killed outright (SIGKILL) cannot pass its stop on, so without this
    its child would carry on alone. When the parent is already gone, the
    signal is sent at once. Linux only; elsewhere it does nothing.

    Returns:
        Whether the signal is armed.
    """
    library = _c_library()
    prctl = getattr(library, "prctl", None) if library is not None else None
    if prctl is None or prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        return False
    # The parent may have died before the call above.
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signum)
    return True


class _ExplainedErrorFilter(logging.Filter):
    """Leave out the traceback of an error the job raised with a message of its own.

    Prefect logs a failed task or flow run with its traceback. The job's own
    errors are the exceptions of the gymchurn and flows packages, such as a
    month without questionnaires, a failed validation, a month already being
    scored, too few labelled rows or a Dask scheduler left without workers.
    They come with a message of what happened and what to do, which a
    traceback would only bury. So does any error once a stop signal has
    come: an interrupt inside a library can come out as an error of that
    library, and the job's last line names the stop.
    Other errors of Python or of the libraries keep their traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and (
            type(error).__module__.startswith(("gymchurn.", "flows.")) or received_signals
        ):
            record.exc_info = None
            record.exc_text = None
            record.gymchurn_explained = True
        return True


def quiet_explained_errors() -> None:
    """Log the job's own errors in Prefect's task and flow run logs without their traceback."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        run_logger = logging.getLogger(name)
        if not any(isinstance(f, _ExplainedErrorFilter) for f in run_logger.filters):
            run_logger.addFilter(_ExplainedErrorFilter())


# Prefect 3.9 adds this line to its "Starting temporary server on ..." record.
_SERVER_ADVICE = re.compile(
    r"See https://www\.prefect\.io/\S+ for more information on running a dedicated "
    r"Prefect server\.?"
)


class _ServerAdviceFilter(logging.Filter):
    """Leave out the link to Prefect's docs that follows a temporary server's start.

    Without PREFECT_API_URL, each run starts a temporary Prefect server. Prefect
    logs the server's address and, in the same record, a link about running a
    dedicated server. The job is meant to run without one, so the link is only
    noise. The address line stays, because it accounts for the seconds the
    server takes to start. A record of the link alone is dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        lines = record.getMessage().splitlines()
        shown_lines = [line for line in lines if not _SERVER_ADVICE.fullmatch(line.strip())]
        if len(shown_lines) == len(lines):
            return True
        if not shown_lines:
            return False
        record.msg = "\n".join(shown_lines)
        record.args = None
        return True


def hide_server_advice() -> None:
    """Drop the link to Prefect's docs from the log line of a temporary server's start."""
    # Prefect logs the start on its top-level "prefect" logger, whose filters
    # see the record before any handler does.
    prefect_logger = logging.getLogger("prefect")
    if not any(isinstance(f, _ServerAdviceFilter) for f in prefect_logger.filters):
        prefect_logger.addFilter(_ServerAdviceFilter())


class _RunConsoleFilter(logging.Filter):
    """Keep off the console the run records that repeat the command's error line.

    ``gymchurn run`` ends a failed month with ``error: run for M failed: ...``.
    For one of the job's own errors, Prefect has by then printed the same
    message when the step raised it, in the step's final state, when the flow
    raised it and in the flow's final state. Only the step's final state
    stays: it names the step. An error of Python or a library keeps its
    traceback, which the error line does not show. A step that completed is
    left out too, because the step's own log line already gives its counts
    and seconds. The Prefect server still receives every record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name not in ("prefect.flow_runs", "prefect.task_runs"):
            return True
        if getattr(record, "gymchurn_explained", False):
            return False
        message = record.getMessage()
        if record.name == "prefect.task_runs":
            return not message.startswith("Finished in state Completed")
        return not message.startswith("Finished in state Failed")


def quiet_run_console() -> None:
    """Drop the flow run's repeats of a failure and the completed steps from Prefect's console.

    Meant for a command that prints each failed run's error itself. Prefect
    must be imported first: its logging set-up replaces the root logger's
    handlers.
    """
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
            isinstance(f, _RunConsoleFilter) for f in handler.filters
        ):
            handler.addFilter(_RunConsoleFilter())
