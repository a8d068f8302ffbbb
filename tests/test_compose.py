"""docker-compose.yml and compose/bi_login_role.sql agree with the code they start.

No Docker engine is needed: the file is read as YAML and its commands,
settings, ports and URLs are checked against gymchurn and Prefect. The role
script runs with psql against the test server.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from urllib.parse import urlparse

import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from gymchurn.cli import app
from gymchurn.settings import Settings
from tests.conftest import REPO

# Services that run the gymchurn image, and so the flow.
JOB_SERVICES = ["migrate", "worker", "gymchurn"]
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
}
# Compose substitutes ${NAME:-default} from the user's environment before it
# starts anything; these tests read the defaults.
_VARIABLE = re.compile(r"\$\{(\w+):-([^}]*)\}")


def _with_defaults(text: str) -> str:
    return _VARIABLE.sub(lambda match: match.group(2), text)


@pytest.fixture(scope="module")
def services() -> dict:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return compose["services"]


def _command(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def _published_port(service: dict) -> tuple[str, int, int]:
    """Return (host address, host port, container port) of a one-port service."""
    (mapping,) = service["ports"]
    host, host_port, container_port = _with_defaults(mapping).split(":")
    return host, int(host_port), int(container_port)


def test_compose_has_schedule_and_bi_services(services):
    assert {"postgres", "prefect-server", "migrate", "worker", "gymchurn"} <= set(services)
    assert services["metabase"]["profiles"] == ["bi"]
    assert services["bi-role"]["profiles"] == ["bi"]
    assert services["metabase"]["image"].startswith("metabase/metabase")


@pytest.mark.parametrize("name", ["migrate", "worker"])
def test_compose_job_command_registered(services, name):
    command = _command(services[name])
    # --help exits 0 only for a command path that typer has registered.
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_compose_job_commands_are_upgrade_and_serve(services):
    assert _command(services["migrate"]) == ["db", "upgrade"]
    assert _command(services["worker"]) == ["serve"]


def test_compose_prefect_server_command_valid(services):
    command = _command(services["prefect-server"])
    assert command[:3] == ["prefect", "server", "start"]
    prefect = shutil.which("prefect", path=os.path.dirname(sys.executable))
    result = subprocess.run(
        [prefect, *command[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **TELEMETRY_OFF},
    )
    assert result.returncode == 0, result.stderr
    assert "--port" in result.stdout


def test_compose_worker_waits_for_schema(services):
    depends = services["worker"]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["prefect-server"]["condition"] == "service_healthy"
    assert depends["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", JOB_SERVICES)
def test_compose_job_variables_known(services, name):
    known_prefect = {"PREFECT_API_URL", *TELEMETRY_OFF}
    for variable in services[name]["environment"]:
        if variable.startswith("GYMCHURN_"):
            field = variable.removeprefix("GYMCHURN_").lower()
            assert field in Settings.model_fields, variable
        elif variable == "DATABASE_URL":
            assert Settings.model_fields["database_url"].validation_alias == variable
        else:
            assert variable in known_prefect, variable


@pytest.mark.parametrize("name", [*JOB_SERVICES, "prefect-server"])
def test_compose_prefect_telemetry_off(services, name):
    environment = services[name]["environment"]
    for variable, value in TELEMETRY_OFF.items():
        assert environment[variable] == value, variable


@pytest.mark.parametrize("name", JOB_SERVICES)
def test_compose_job_reaches_database_and_server(services, name):
    environment = services[name]["environment"]
    postgres = services["postgres"]["environment"]
    database = urlparse(_with_defaults(environment["DATABASE_URL"]))
    assert database.hostname == "postgres"
    assert database.port == 5432
    assert database.username == postgres["POSTGRES_USER"]
    assert database.password == _with_defaults(postgres["POSTGRES_PASSWORD"])
    assert database.path.lstrip("/") == postgres["POSTGRES_DB"]

    server_port = int(re.search(r"--port (\d+)", services["prefect-server"]["command"])[1])
    api = urlparse(environment["PREFECT_API_URL"])
    assert api.hostname == "prefect-server"
    assert api.port == server_port
    assert api.path == "/api"


def test_compose_prefect_ui_uses_published_port(services):
    server = services["prefect-server"]
    host, host_port, container_port = _published_port(server)
    assert container_port == int(re.search(r"--port (\d+)", server["command"])[1])
    ui_api = urlparse(_with_defaults(server["environment"]["PREFECT_UI_API_URL"]))
    assert (ui_api.hostname, ui_api.port, ui_api.path) == (host, host_port, "/api")


def test_compose_ports_bound_to_loopback(services):
    published = {name: s for name, s in services.items() if "ports" in s}
    assert set(published) == {"postgres", "prefect-server", "metabase"}
    for name, service in published.items():
        host, _, _ = _published_port(service)
        assert host == "127.0.0.1", name


def test_compose_bi_role_command(services):
    service = services["bi-role"]
    command = _command(service)
    assert command[0] == "psql"
    assert "ON_ERROR_STOP=1" in command
    assert "bi_group=churn_bi" in command
    (mount,) = service["volumes"]
    source, target, _ = mount.split(":")
    assert (REPO / source).is_file()
    assert command[command.index("-f") + 1] == target
    # The password comes from the environment, never from the command line.
    assert not any("PASSWORD" in part for part in command)
    assert service["environment"]["PGUSER"] == services["postgres"]["environment"]["POSTGRES_USER"]
    assert services["metabase"]["depends_on"]["bi-role"]["condition"] == (
        "service_completed_successfully"
    )


@pytest.fixture
def group_role(admin_engine):
    """A NOLOGIN group role of this test's own, and the login role name to create in it."""
    suffix = uuid.uuid4().hex[:10]
    group, login = f"gymchurn_test_group_{suffix}", f"gymchurn_test_login_{suffix}"
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{group}" NOLOGIN')
    yield group, login
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{login}"')
        conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{group}"')


def _run_role_script(server_url, login: str, group: str, password: str | None):
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql not installed")
    env = {key: value for key, value in os.environ.items() if key != "BI_DB_PASSWORD"}
    if password is not None:
        env["BI_DB_PASSWORD"] = password
    # libpq reads the URL without the SQLAlchemy driver name.
    url = server_url.set(drivername="postgresql").render_as_string(hide_password=False)
    return subprocess.run(
        [psql, url, "--quiet", "-v", "ON_ERROR_STOP=1", "-v", f"bi_user={login}"]
        + ["-v", f"bi_group={group}", "-f", str(REPO / "compose" / "bi_login_role.sql")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _login_role(admin_engine, login: str, group: str):
    with admin_engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT rolcanlogin, rolsuper, rolpassword, pg_has_role(:login, :grp, 'member')"
                " AS member FROM pg_authid WHERE rolname = :login"
            ),
            {"login": login, "grp": group},
        ).first()


def test_bi_role_script_creates_login_member(admin_engine, server_url, group_role):
    group, login = group_role
    # Quotes and a semicolon stay inside the password.
    result = _run_role_script(server_url, login, group, 'it\'s "x"; DROP ROLE postgres; --')

    assert result.returncode == 0, result.stderr
    role = _login_role(admin_engine, login, group)
    assert role.rolcanlogin is True
    assert role.rolsuper is False
    assert role.rolpassword is not None
    assert role.member is True


def test_bi_role_script_rerun_sets_new_password(admin_engine, server_url, group_role):
    group, login = group_role
    assert _run_role_script(server_url, login, group, "first").returncode == 0
    first = _login_role(admin_engine, login, group).rolpassword

    result = _run_role_script(server_url, login, group, "second")

    assert result.returncode == 0, result.stderr
    assert _login_role(admin_engine, login, group).rolpassword != first


@pytest.mark.parametrize("password", [None, ""])
def test_bi_role_script_without_password_rejected(admin_engine, server_url, group_role, password):
    group, login = group_role
    result = _run_role_script(server_url, login, group, password)

    assert result.returncode != 0
    assert "BI_DB_PASSWORD is empty" in result.stderr
    assert _login_role(admin_engine, login, group) is None
