"""docker-compose.yml: accepted by Compose, and two replicas sharing PostgreSQL and one token volume."""

from __future__ import annotations

import shutil
import subprocess

import yaml

from tests.harness import REPO


def compose_command() -> list[str]:
    """Compose v2 (`docker compose`) where its plugin is installed, else Debian's docker-compose."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    assert shutil.which("docker-compose"), "docker-compose is missing: run `make setup`"
    return ["docker-compose"]


def test_compose_two_replicas_accepted() -> None:
    result = subprocess.run([*compose_command(), "config"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    replicas = {name: service for name, service in services.items() if service.get("command") == ["signserver", "serve"]}
    assert len(replicas) == 2
    node_names = {service["environment"]["SIGNSERVER_NODE_NAME"] for service in replicas.values()}
    assert len(node_names) == 2
    for service in replicas.values():
        assert service["environment"]["SIGNSERVER_DATABASE_URL"].startswith("postgresql+asyncpg://")
        sources = {volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
                   for volume in service["volumes"]}
        assert {"softhsm-tokens", "signserver-data"} <= sources
        assert service["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert services["postgres"]["image"].startswith("postgres:")
    assert "softhsm-tokens" in config["volumes"]
