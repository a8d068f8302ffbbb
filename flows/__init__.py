"""Prefect flows of gymchurn."""

from gymchurn.runtime import configure_environment
from gymchurn.settings import get_settings

# Runs before any Prefect import below, so the flows never start a server
# with telemetry on, whoever imports them (the CLI, `prefect deploy`, tests).
configure_environment(get_settings().home)
