"""compose.yaml and the Dockerfile hold together, and the registry config they ship works.

No container runtime here, so the compose file is checked by reading it: every reference it
makes must resolve. The registry config is proven by running the real registry with it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
import pytest
import requests
import yaml
from django.urls import resolve

from tests.support.deployment import REPO_ROOT, dump_cache, gunicorn, manage, process_database
from tests.support.images import ImagePusher
from tests.support.registry_server import RegistryServer, free_port

COMPOSE = REPO_ROOT / "compose.yaml"
REGISTRY_CONFIG = REPO_ROOT / "deploy" / "registry" / "config.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DASHBOARD_SERVICES = ("migrate", "dashboard", "worker")
GUNICORN_PORT = 8000


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` as compose resolves it when VAR is not set."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def dashboard_env(compose: dict) -> dict[str, str]:
    return {key: interpolate(str(value)) for key, value in compose["services"]["dashboard"]["environment"].items()}


@pytest.fixture(scope="module")
def registry_config() -> dict:
    return yaml.safe_load(REGISTRY_CONFIG.read_text())


def test_services_depend_only_on_services_that_exist(compose):
    services = compose["services"]
    assert {"postgres", "dashboard", "worker", "registry"} <= set(services)
    for name, service in services.items():
        depends_on = service.get("depends_on", [])
        assert set(depends_on) <= set(services), name


def test_web_worker_and_migrations_share_one_environment(compose):
    services = compose["services"]
    environments = [services[name]["environment"] for name in DASHBOARD_SERVICES]
    assert all(env == environments[0] for env in environments)
    assert services["dashboard"]["command"] == ["gunicorn", "-c", "deploy/gunicorn.conf.py"]
    assert services["worker"]["command"] == ["python", "manage.py", "db_worker"]
    assert services["migrate"]["command"][:3] == ["python", "manage.py", "migrate"]
    assert services["dashboard"]["ports"] == [f"{GUNICORN_PORT}:{GUNICORN_PORT}"]


def test_the_dashboard_points_at_the_compose_database_and_registry(compose, dashboard_env, registry_config):
    assert dashboard_env["DEBUG"] == "false"
    assert dashboard_env["TASK_BACKEND"] == "database"
    database = dj_database_url.parse(dashboard_env["DATABASE_URL"])
    postgres = {key: interpolate(str(value)) for key, value in compose["services"]["postgres"]["environment"].items()}
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["HOST"], database["PORT"]) == ("postgres", 5432)
    assert (database["NAME"], database["USER"], database["PASSWORD"]) == (
        postgres["POSTGRES_DB"],
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
    )
    registry_url = urlsplit(dashboard_env["REGISTRY_URL"])
    assert registry_url.hostname == "registry"
    assert f":{registry_url.port}" == registry_config["http"]["addr"]


def test_files_the_compose_file_and_dockerfile_use_exist(compose):
    for service in compose["services"].values():
        if "build" in service:
            assert (REPO_ROOT / service["build"] / "Dockerfile").is_file()
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO_ROOT / source).is_file(), volume
    copied = re.findall(r"^COPY (\S+) ", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert "deploy/gunicorn.conf.py" in copied
    for source in copied:
        assert (REPO_ROOT / source).exists(), source


def test_the_image_runs_as_an_unprivileged_user():
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.\d+-slim$", dockerfile, flags=re.MULTILINE)
    users = re.findall(r"^USER (\S+)$", dockerfile, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")


def test_the_registry_notifies_the_dashboard_service_with_the_shared_secret(dashboard_env, registry_config, settings):
    [endpoint] = registry_config["notifications"]["endpoints"]
    url = urlsplit(endpoint["url"])
    assert (url.hostname, url.port) == ("dashboard", GUNICORN_PORT)
    # The registry's Host header must pass ALLOWED_HOSTS.
    assert "dashboard" in dashboard_env["ALLOWED_HOSTS"].split(",")
    assert resolve(url.path).url_name == "registry-events"
    assert endpoint["headers"] == {settings.REGISTRY_NOTIFICATIONS_HEADER: [dashboard_env["REGISTRY_NOTIFICATIONS_SECRET"]]}
    assert registry_config["storage"]["delete"]["enabled"] is True


def test_check_deploy_is_clean_with_the_compose_environment(dashboard_env):
    result = manage(dashboard_env["DATABASE_URL"], "check", "--deploy", "--fail-level", "WARNING", **dashboard_env)
    assert "no issues" in result.stdout


def render_for_test(config: str, *, addr: str, root: Path, notify_url: str) -> str:
    """The shipped config with only the listen address, storage and endpoint URL replaced."""
    replacements = {
        "  addr: :5000\n": f"  addr: {addr}\n",
        "    rootdirectory: /var/lib/registry\n": f"    rootdirectory: {root}\n",
        "      url: http://dashboard:8000/hooks/registry/\n": f"      url: {notify_url}\n",
    }
    for old, new in replacements.items():
        assert config.count(old) == 1, old
        config = config.replace(old, new)
    return config


def test_the_shipped_registry_config_serves_pushes_and_notifies_a_running_dashboard(tmp_path, repo_name):
    registry_port = free_port()
    secret = "change-me-notification-secret"  # what the shipped config sends
    env = {
        "REGISTRY_URL": f"http://127.0.0.1:{registry_port}",
        "REGISTRY_NOTIFICATIONS_SECRET": secret,
        "DASHBOARD_PUBLIC_READ": "true",
        # The push is synced while the registry waits for the answer: no worker to wait for.
        "TASK_BACKEND": "immediate",
    }
    with process_database(tmp_path) as database_url, gunicorn(database_url, tmp_path / "web.log", **env) as web:
        registry = RegistryServer(url=env["REGISTRY_URL"], port=registry_port, root=tmp_path / "registry")
        registry.root.mkdir()
        shipped = REGISTRY_CONFIG.read_text()
        rendered = render_for_test(
            shipped, addr=registry.host, root=registry.root / "storage", notify_url=f"{web.url}/hooks/registry/"
        )
        changed = [(a, b) for a, b in zip(shipped.splitlines(), rendered.splitlines(), strict=True) if a != b]
        assert len(changed) == 3
        registry.config_path.write_text(rendered)
        registry.start()
        try:
            image = ImagePusher(registry.url).push_image(repo_name, tags=("1.0",))
            deadline = time.monotonic() + 60
            while requests.get(f"{web.url}/repositories/{repo_name}/", timeout=30).status_code != 200:
                assert time.monotonic() < deadline, f"the push never reached the dashboard:\n{web.stop()}"
                time.sleep(0.2)
        finally:
            registry.stop()
        cache = dump_cache(database_url)
    assert cache["tags"] == {repo_name: {"1.0": image.digest}}
