"""The monthly-scoring deployment: the monthly flow on a cron schedule.

``prefect.yaml`` declares the same deployment for ``prefect deploy``; keep its
name and cron equal to the constants here.
"""

from prefect.schedules import Cron
from prefect.types.entrypoint import EntrypointType

from flows.monthly_scoring import monthly_scoring

DEPLOYMENT_NAME = "monthly-scoring"
# 06:00 on the 1st of every month in the business timezone, when the month
# to score has just ended.
CRON = "0 6 1 * *"


def monthly_schedule(timezone: str):
    """Return the deployment's cron schedule in ``timezone`` (an IANA name)."""
    return Cron(CRON, timezone=timezone)


def serve_monthly_scoring(timezone: str) -> None:
    """Register the deployment with the Prefect API and run its flow runs until stopped.

    A scheduled run passes no ``month``, so the flow scores the month before
    the run's date in the business timezone.
    """
    monthly_scoring.serve(
        name=DEPLOYMENT_NAME,
        schedules=[monthly_schedule(timezone)],
        description=f"Score the month just ended, at {CRON} ({timezone}).",
        # A module path, not a file path: the flow runs from the installed
        # package in any working folder, a container's included.
        entrypoint_type=EntrypointType.MODULE_PATH,
        # Keep the schedule active while this process restarts. A run due in
        # that gap waits as Late, and the runner (Prefect 3.9) picks up every
        # run scheduled before now when it is back. A paused schedule would
        # create no run for that month at all.
        pause_on_shutdown=False,
    )
