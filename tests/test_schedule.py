"""The monthly-scoring deployment on a real Prefect server, served by `gymchurn serve`.

The module starts `prefect server start` on a free port of 127.0.0.1 and
`gymchurn serve` against it, with the real questionnaires loaded as 2024-10,
and stops both (and any flow run they started) when its tests are done.
"""

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import yaml

from flows.deployment import CRON, DEPLOYMENT_NAME
from gymchurn.loader import load_questionnaire_file, read_questionnaire_csv
from gymchurn.schema import format_month, parse_month, previous_month
from gymchurn.settings import Settings
from tests.conftest import REPO, prefect_home

FULL_NAME = f"monthly_scoring/{DEPLOYMENT_NAME}"
# Not the default timezone, so that the tests show the setting reaches the schedule.
TIMEZONE = "America/Sao_Paulo"
# Seconds each wait may take before the test fails: the server, `serve`, a flow run.
SERVER_START_LIMIT = 90
SERVE_START_LIMIT = 90
RUN_LIMIT = 300

_TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """Stop a process started in a session of its own, with its children."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


def _wait_until(check, limit: float, process: subprocess.Popen, log: Path, name: str):
    """Call ``check`` until it returns a value, the process exits or ``limit`` seconds pass."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with code {process.returncode}:\n{log.read_text()}")
        value = check()
        if value is not None:
            return value
        time.sleep(0.5)
    pytest.fail(f"{name} not ready after {limit} s:\n{log.read_text()}")


def _server_health(api_url: str):
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status
    except OSError:
        return None


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """URL of the API of a Prefect server of this module's own."""
    folder = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env.update(
        _TELEMETRY_OFF,
        PREFECT_HOME=str(prefect_home(folder / "home")),
        PREFECT_UI_ENABLED="false",
        # Auto-scheduled runs appear within seconds instead of a minute.
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="1",
    )
    log = folder / "server.log"
    command = ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as output:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / command[0]), *command[1:]],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        started = time.monotonic()
        _wait_until(
            lambda: _server_health(api_url), SERVER_START_LIMIT, server, log, "prefect server"
        )
        print(f"\nprefect server ready in {time.monotonic() - started:.1f} s")
        yield api_url
    finally:
        _stop(server)


@pytest.fixture(scope="module")
def prefect_client(prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_api}):
        with get_client(sync_client=True) as client:
            yield client


def _serve_env(prefect_api: str, home: Path) -> dict:
    return {
        **os.environ,
        **_TELEMETRY_OFF,
        "PREFECT_API_URL": prefect_api,
        "PREFECT_HOME": str(home),
        "GYMCHURN_TIMEZONE": TIMEZONE,
        # The runner looks for runs every second instead of every 10.
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }


def _deployment_or_none(client):
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(FULL_NAME)
    except ObjectNotFound:
        return None


@pytest.fixture(scope="module")
def served(module_database, real_data, prefect_api, prefect_client, tmp_path_factory):
    """`gymchurn serve` running against the module's server and database.

    Yields:
        The deployment as the server stores it.
    """
    load_questionnaire_file(
        module_database, read_questionnaire_csv(real_data), parse_month("2024-10")
    )
    folder = tmp_path_factory.mktemp("serve")
    log = folder / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "gymchurn.cli", "serve"],
            cwd=REPO,
            env=_serve_env(prefect_api, folder / "prefect"),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        started = time.monotonic()
        deployment = _wait_until(
            lambda: _deployment_or_none(prefect_client),
            SERVE_START_LIMIT,
            process,
            log,
            "gymchurn serve",
        )
        print(f"\ngymchurn serve registered the deployment in {time.monotonic() - started:.1f} s")
        yield deployment
    finally:
        _stop(process)


def _run_deployment(month: str | None):
    from prefect.deployments import run_deployment

    parameters = {} if month is None else {"month": month}
    started = time.monotonic()
    flow_run = run_deployment(FULL_NAME, parameters=parameters, timeout=RUN_LIMIT, poll_interval=1)
    seconds = time.monotonic() - started
    print(f"\nflow run for {month or 'no month'}: {flow_run.state.type.value} in {seconds:.1f} s")
    return flow_run


def _count(engine, query: str, **params) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(query), params).scalar_one()


def test_serve_registers_monthly_cron(served):
    assert len(served.schedules) == 1
    schedule = served.schedules[0]
    assert schedule.schedule.cron == "0 6 1 * *"
    assert schedule.schedule.timezone == TIMEZONE
    assert schedule.active is True
    assert served.paused is False
    assert served.entrypoint == "flows.monthly_scoring.monthly_scoring"
    assert served.parameters == {}


def test_scheduled_runs_start_at_six_local_time(served, prefect_client):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    def upcoming():
        runs = prefect_client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[served.id]))
        )
        scheduled = [run for run in runs if run.auto_scheduled]
        return scheduled or None

    deadline = time.monotonic() + 30
    scheduled = upcoming()
    while scheduled is None and time.monotonic() < deadline:
        time.sleep(0.5)
        scheduled = upcoming()
    assert scheduled is not None, "the server created no scheduled run within 30 s"

    first = min(run.expected_start_time for run in scheduled)
    local = first.astimezone(ZoneInfo(TIMEZONE))
    assert (local.day, local.hour, local.minute) == (1, 6, 0)
    # 06:00 in Sao Paulo (UTC-3, no daylight saving time since 2019) is 09:00 UTC.
    assert first.astimezone(dt.UTC).hour == 9
    assert first > dt.datetime.now(dt.UTC)
    # A scheduled run passes no month: the flow scores the month before its date.
    assert all(run.parameters == {} for run in scheduled)


def test_deployment_run_scores_month(served, module_database):
    flow_run = _run_deployment("2024-10")

    assert flow_run.state.is_completed(), flow_run.state.message
    n_scores = _count(
        module_database, "SELECT count(*) FROM churn.scores WHERE month = '2024-10-01'"
    )
    assert n_scores == 4000
    status = _count(
        module_database,
        "SELECT status FROM churn.runs WHERE run_id = :run_id",
        run_id=flow_run.id,
    )
    assert status == "succeeded"


def test_deployment_run_without_questionnaires_fails(served, module_database):
    flow_run = _run_deployment("2024-12")

    assert flow_run.state.is_failed()
    assert "no questionnaires for 2024-12" in flow_run.state.message
    assert "gymchurn load-csv FILE --month 2024-12" in flow_run.state.message
    status = _count(
        module_database,
        "SELECT status FROM churn.runs WHERE run_id = :run_id",
        run_id=flow_run.id,
    )
    assert status == "failed"


def test_run_without_month_picks_previous_month(served, module_database):
    # Only 2024-10 is loaded, so the run fails, and its message names the month it chose.
    expected = format_month(previous_month(TIMEZONE))
    flow_run = _run_deployment(None)

    assert flow_run.parameters == {}
    assert flow_run.state.is_failed()
    assert f"no questionnaires for {expected}" in flow_run.state.message


def test_late_run_scores_due_month(served, module_database):
    from prefect.deployments import run_deployment

    # 06:00 on 1 November 2024 in São Paulo: a run that waited while serve was down.
    due = dt.datetime(2024, 11, 1, 9, 0, tzinfo=dt.UTC)
    flow_run = run_deployment(
        FULL_NAME, parameters={}, scheduled_time=due, timeout=RUN_LIMIT, poll_interval=1
    )
    month = _count(
        module_database, "SELECT month FROM churn.runs WHERE run_id = :run_id", run_id=flow_run.id
    )

    assert flow_run.state.is_completed(), flow_run.state.message
    assert month == dt.date(2024, 10, 1)


def test_serve_without_api_url_rejected(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    # An empty Prefect home: no profile that could set the URL either.
    env.update(_TELEMETRY_OFF, PREFECT_HOME=str(tmp_path / "prefect"))
    result = subprocess.run(
        [sys.executable, "-m", "gymchurn.cli", "serve"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "PREFECT_API_URL is not set" in result.stderr
    assert "prefect server start" in result.stderr


def test_serve_unreachable_server_rejected(tmp_path):
    # Nothing listens on a port just freed.
    api_url = f"http://127.0.0.1:{_free_port()}/api"
    env = {**os.environ, **_TELEMETRY_OFF, "PREFECT_API_URL": api_url}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    result = subprocess.run(
        [sys.executable, "-m", "gymchurn.cli", "serve"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert f"cannot reach the Prefect server at PREFECT_API_URL={api_url}" in result.stderr


def test_prefect_yaml_matches_served_deployment():
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deployments = config["deployments"]
    assert [d["name"] for d in deployments] == [DEPLOYMENT_NAME]
    deployment = deployments[0]
    assert deployment["entrypoint"] == "flows/monthly_scoring.py:monthly_scoring"
    assert deployment["parameters"] == {}
    assert len(deployment["schedules"]) == 1
    schedule = deployment["schedules"][0]
    assert schedule["cron"] == CRON
    assert schedule["timezone"] == Settings.model_fields["timezone"].default


@pytest.mark.parametrize(
    ("now", "timezone", "expected"),
    [
        # 1 December 01:00 in Moscow (UTC+3) is still 30 November in UTC.
        (dt.datetime(2026, 11, 30, 22, 0, tzinfo=dt.UTC), "Europe/Moscow", "2026-11-01"),
        (dt.datetime(2026, 11, 30, 22, 0, tzinfo=dt.UTC), "UTC", "2026-10-01"),
        # 1 January rolls back over the year.
        (dt.datetime(2027, 1, 1, 3, 0, tzinfo=dt.UTC), "Europe/Moscow", "2026-12-01"),
        # The last day of a month scores the month before it.
        (dt.datetime(2026, 3, 31, 12, 0, tzinfo=dt.UTC), "Europe/Moscow", "2026-02-01"),
    ],
)
def test_previous_month_in_business_timezone(now, timezone, expected):
    assert previous_month(timezone, now) == dt.date.fromisoformat(expected)
