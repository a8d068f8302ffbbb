"""Prefect flows of gymchurn."""

import logging

from gymchurn.runtime import configure_environment
from gymchurn.settings import get_settings

# Runs before any Prefect import below, so the flows never start a server
# with telemetry on, whatever imports them (the CLI, `prefect deploy`, tests).
configure_environment(get_settings().home)

# The package logs its counts at INFO; Prefect routes them into the flow-run
# logs (PREFECT_LOGGING_EXTRA_LOGGERS), but only records at the logger's level.
if logging.getLogger("gymchurn").level == logging.NOTSET:
    logging.getLogger("gymchurn").setLevel(logging.INFO)
