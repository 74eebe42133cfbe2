"""compose.yaml, compose.production.yaml and the Dockerfile hold together, and the registry
config they ship works.

No container runtime here, so the compose files are checked by reading them: every reference
they make must resolve, and the dashboard runs under gunicorn with each file's environment.
The registry config is proven by running the real registry with it.
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

from tests.support.deployment import REPO_ROOT, dump_cache, gunicorn, manage, process_database, shell
from tests.support.images import ImagePusher
from tests.support.registry_server import RegistryServer, free_port

COMPOSE = REPO_ROOT / "compose.yaml"
COMPOSE_PRODUCTION = REPO_ROOT / "compose.production.yaml"
REGISTRY_CONFIG = REPO_ROOT / "deploy" / "registry" / "config.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DASHBOARD_SERVICES = ("migrate", "dashboard", "worker")
GUNICORN_PORT = 8000


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` as compose resolves it when VAR is not set."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


class ComposeLoader(yaml.SafeLoader):
    """YAML as compose reads it: `!reset` empties what the files before set."""


ComposeLoader.add_constructor("!reset", lambda loader, node: RESET)
RESET = object()


def load_compose(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=ComposeLoader)  # noqa: S506 - a SafeLoader subclass


def merge_compose(base: dict, override: dict) -> dict:
    """`docker compose -f base -f override`, for what these files use: services and volumes
    are merged by name, an environment key by key, and `!reset` removes a setting."""
    merged = {**base, "volumes": {**base.get("volumes", {}), **override.get("volumes", {})}}
    services = {name: dict(service) for name, service in base["services"].items()}
    for name, service in override["services"].items():
        target = services.setdefault(name, {})
        for key, value in service.items():
            if value is RESET:
                target.pop(key, None)
            elif key == "environment":
                target[key] = {**target.get(key, {}), **value}
            else:
                target[key] = value
    merged["services"] = services
    return merged


def environment_of(compose: dict, service: str = "dashboard") -> dict[str, str]:
    return {key: interpolate(str(value)) for key, value in compose["services"][service]["environment"].items()}


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose(COMPOSE)


@pytest.fixture(scope="module")
def production(compose: dict) -> dict:
    return merge_compose(compose, load_compose(COMPOSE_PRODUCTION))


@pytest.fixture(scope="module")
def dashboard_env(compose: dict) -> dict[str, str]:
    return environment_of(compose)


@pytest.fixture(scope="module")
def production_env(production: dict) -> dict[str, str]:
    return environment_of(production)


@pytest.fixture(scope="module")
def registry_config() -> dict:
    return yaml.safe_load(REGISTRY_CONFIG.read_text())


@pytest.mark.parametrize("variant", ["compose", "production"])
def test_services_depend_only_on_services_that_exist(variant, request):
    services = request.getfixturevalue(variant)["services"]
    assert {"postgres", "dashboard", "worker", "registry"} <= set(services)
    for name, service in services.items():
        depends_on = service.get("depends_on", [])
        assert set(depends_on) <= set(services), name


@pytest.mark.parametrize("variant", ["compose", "production"])
def test_web_worker_and_migrations_share_one_environment(variant, request):
    services = request.getfixturevalue(variant)["services"]
    environments = [services[name]["environment"] for name in DASHBOARD_SERVICES]
    assert all(env == environments[0] for env in environments)
    assert services["dashboard"]["command"] == ["gunicorn", "-c", "deploy/gunicorn.conf.py"]
    assert services["worker"]["command"] == ["python", "manage.py", "db_worker"]
    assert services["migrate"]["command"][:3] == ["python", "manage.py", "migrate"]


def test_plain_compose_serves_http_on_8000_and_production_only_tls_through_caddy(compose, production):
    assert compose["services"]["dashboard"]["ports"] == [f"{GUNICORN_PORT}:{GUNICORN_PORT}"]
    assert "ports" not in production["services"]["dashboard"]
    caddy = production["services"]["caddy"]
    assert caddy["ports"] == ["80:80", "443:443"]
    command = [interpolate(part) for part in caddy["command"]]
    assert command[:2] == ["caddy", "reverse-proxy"]
    assert command[command.index("--to") + 1] == f"dashboard:{GUNICORN_PORT}"
    assert command[command.index("--from") + 1] == "localhost"
    assert set(production["volumes"]) == set(compose["volumes"]) | {"caddy-data"}
    assert all(volume.split(":")[0] in production["volumes"] for volume in caddy["volumes"])


def test_plain_compose_has_no_secure_cookies_and_production_has_them(dashboard_env, production_env):
    assert dashboard_env["SECURE_COOKIES"] == "false"
    assert dashboard_env["SECURE_SSL_REDIRECT"] == "false"
    assert "BEHIND_TLS_PROXY" not in dashboard_env
    assert production_env["SECURE_COOKIES"] == "true"
    assert production_env["SECURE_SSL_REDIRECT"] == "true"
    assert production_env["BEHIND_TLS_PROXY"] == "true"
    assert production_env["CSRF_TRUSTED_ORIGINS"] == "https://localhost"
    assert {"localhost", "127.0.0.1", "dashboard"} <= set(production_env["ALLOWED_HOSTS"].split(","))


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


def test_files_the_compose_file_and_dockerfile_use_exist(production):
    for service in production["services"].values():
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


def test_the_image_runs_as_an_unprivileged_user_with_debug_off():
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.\d+-slim$", dockerfile, flags=re.MULTILINE)
    users = re.findall(r"^USER (\S+)$", dockerfile, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    # So `docker run` without settings refuses to start instead of running with the dev key.
    assert re.search(r"^ENV DEBUG=false\b", dockerfile, flags=re.MULTILINE)
    assert "DEBUG=true" not in dockerfile


def test_the_registry_notifies_the_dashboard_service_with_the_shared_secret(dashboard_env, registry_config, settings):
    [endpoint] = registry_config["notifications"]["endpoints"]
    url = urlsplit(endpoint["url"])
    assert (url.hostname, url.port) == ("dashboard", GUNICORN_PORT)
    # The registry's Host header must pass ALLOWED_HOSTS.
    assert "dashboard" in dashboard_env["ALLOWED_HOSTS"].split(",")
    assert resolve(url.path).url_name == "registry-events"
    assert endpoint["headers"] == {settings.REGISTRY_NOTIFICATIONS_HEADER: [dashboard_env["REGISTRY_NOTIFICATIONS_SECRET"]]}
    assert registry_config["storage"]["delete"]["enabled"] is True


def test_check_deploy_is_clean_with_the_production_environment(production_env, static_root):
    env = production_env | {"STATIC_ROOT": static_root}
    result = manage(env["DATABASE_URL"], "check", "--deploy", "--fail-level", "WARNING", **env)
    assert "no issues" in result.stdout


def test_check_deploy_on_plain_http_warns_only_about_https(dashboard_env, static_root):
    env = dashboard_env | {"STATIC_ROOT": static_root}
    result = manage(env["DATABASE_URL"], "check", "--deploy", "--fail-level", "ERROR", **env)
    assert sorted(set(re.findall(r"\((\w+\.\w\d+)\)", result.stderr + result.stdout))) == [
        "security.W008",  # no redirect to https
        "security.W012",  # session cookie not Secure
        "security.W016",  # CSRF cookie not Secure
    ]


def sign_in(base_url: str, headers: dict[str, str]) -> tuple[requests.Response, requests.Response, dict[str, str]]:
    """Sign in through the form as a browser would, with the cookies held by hand: a Secure
    cookie is sent back because the browser is on https (the proxy's side), not because requests
    would send it over this plain-http hop. Returns the form, the answer to the POST, the cookies."""
    cookies: dict[str, str] = {}
    form = requests.get(f"{base_url}/accounts/login/", headers=headers, timeout=30, allow_redirects=False)
    cookies |= form.cookies.get_dict()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    assert token, form.text
    answer = requests.post(
        f"{base_url}/accounts/login/",
        data={"username": "ada", "password": SIGN_IN_PASSWORD, "csrfmiddlewaretoken": token.group(1), "next": "/"},
        headers=headers,
        cookies=cookies,
        timeout=30,
        allow_redirects=False,
    )
    return form, answer, cookies | answer.cookies.get_dict()


SIGN_IN_PASSWORD = "correct horse battery staple"
CREATE_USER = f"from django.contrib.auth.models import User; User.objects.create_user('ada', password={SIGN_IN_PASSWORD!r})"


def cookie_flags(response: requests.Response) -> dict[str, bool]:
    """Whether each cookie the response sets is Secure."""
    return {cookie.name: cookie.secure for cookie in response.cookies}


def test_signing_in_through_the_form_on_plain_http_with_the_compose_environment(tmp_path, dashboard_env, static_root):
    env = dashboard_env | {"STATIC_ROOT": static_root}
    with process_database(tmp_path) as database_url:
        env["DATABASE_URL"] = database_url
        shell(database_url, CREATE_USER, **env)
        with gunicorn(database_url, tmp_path / "web.log", **env) as web:
            # A real cookie jar, which keeps Secure cookies off plain http as browsers do.
            session = requests.Session()
            form = session.get(f"{web.url}/", timeout=30)
            assert form.url == f"{web.url}/accounts/login/?next=/"
            assert "needs HTTPS" not in form.text
            assert cookie_flags(form) == {"csrftoken": False}
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
            signed_in = session.post(
                form.url,
                data={"username": "ada", "password": SIGN_IN_PASSWORD, "csrfmiddlewaretoken": token, "next": "/"},
                headers={"Origin": web.url},
                timeout=30,
            )
            assert signed_in.status_code == 200
            assert signed_in.url == f"{web.url}/"
            assert ">Repositories</h1>" in signed_in.text
            assert session.cookies.get("sessionid")


def test_signing_in_through_the_form_behind_the_tls_proxy_with_the_production_environment(
    tmp_path, production_env, static_root
):
    env = production_env | {"STATIC_ROOT": static_root}
    with process_database(tmp_path) as database_url:
        env["DATABASE_URL"] = database_url
        shell(database_url, CREATE_USER, **env)
        with gunicorn(database_url, tmp_path / "web.log", **env) as web:
            # Around the proxy, plain http: people are sent to https.
            around = requests.get(f"{web.url}/accounts/login/", headers={"Host": "localhost"}, timeout=30, allow_redirects=False)
            assert (around.status_code, around.headers["Location"]) == (301, "https://localhost/accounts/login/")
            # Through Caddy: the host and scheme the browser used.
            proxied = {"Host": "localhost", "X-Forwarded-Proto": "https", "Origin": "https://localhost"}
            form, answer, cookies = sign_in(web.url, proxied)
            assert "needs HTTPS" not in form.text
            assert cookie_flags(form) == {"csrftoken": True}
            assert (answer.status_code, answer.headers["Location"]) == (302, "/")
            assert cookie_flags(answer) == {"csrftoken": True, "sessionid": True}
            catalog = requests.get(f"{web.url}/", headers=proxied, cookies=cookies, timeout=30, allow_redirects=False)
            assert catalog.status_code == 200
            assert ">Repositories</h1>" in catalog.text
            assert "max-age=31536000" in catalog.headers["Strict-Transport-Security"]


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
