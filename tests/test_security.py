"""The security baseline: production settings, headers, cookies, CSP-clean pages, CSRF,
sign-in with lockout, and registry credentials that never reach a page or a log line."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from dashboard.models import AccessRule, AuditEntry, Registry, Role
from dashboard.registries import configured_registry
from tests.page_checks import csp_violations
from tests.personas import FAST_HASHERS, make_user

REPO_ROOT = Path(__file__).resolve().parents[1]
LOGIN = reverse("login")
PASSWORD = "correct horse battery staple"

# The production environment the README documents (with example values).
PRODUCTION_ENV = {
    "DEBUG": "false",
    "ALLOWED_HOSTS": "registry-browser.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://registry-browser.example.com",
    "SECURE_SSL_REDIRECT": "true",
    "BEHIND_TLS_PROXY": "true",
    "REGISTRY_URL": "https://registry.example.com",
}


def manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """manage.py in a fresh process with only the given environment (plus PATH)."""
    environment = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        **env,
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_documented_production_environment(tmp_path, static_root):
    env = PRODUCTION_ENV | {"SECRET_KEY": secrets.token_urlsafe(50), "STATIC_ROOT": static_root}
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_would_catch_a_weak_setup(tmp_path):
    """The check above can fail: a short key and no TLS redirect are reported."""
    weak = {**PRODUCTION_ENV, "SECURE_SSL_REDIRECT": "false", "SECRET_KEY": "too-short"}
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **weak)
    assert result.returncode != 0
    assert "security.W009" in result.stderr and "security.W008" in result.stderr


@pytest.mark.parametrize("secret_key", [None, "dev-only-insecure-key-do-not-use-in-production"])
def test_production_refuses_to_start_without_a_real_secret_key(tmp_path, secret_key):
    env = dict(PRODUCTION_ENV) | ({"SECRET_KEY": secret_key} if secret_key else {})
    result = manage(tmp_path, "check", **env)
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


@pytest.mark.django_db
def test_pages_carry_the_security_headers(client):
    client.force_login(make_user("alice"))
    response = client.get(reverse("dashboard:catalog"))
    assert response.status_code == 200
    policy = dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";") if part.strip())
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["form-action"] == "'self'"
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


@pytest.mark.django_db
@pytest.mark.parametrize("url_name", ["login", "password_change", "password_change_done"])
def test_account_pages_need_nothing_the_csp_blocks(client, url_name):
    client.force_login(make_user("alice"))
    if url_name == "login":
        client.logout()
    response = client.get(reverse(url_name))
    assert response.status_code == 200
    html = response.content.decode()
    assert csp_violations(html) == []
    # htmx 2 would inject an inline <style> for its indicators without this.
    assert '"includeIndicatorStyles": false' in html


@pytest.mark.django_db
def test_the_sign_in_page_says_when_secure_cookies_cannot_work_over_plain_http(client, settings):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    notice = "Sign-in needs HTTPS here, or set SECURE_COOKIES=false for a plain-http internal deployment"

    assert notice in client.get(LOGIN).content.decode()
    assert notice not in client.get(LOGIN, secure=True).content.decode()
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    assert notice not in client.get(LOGIN).content.decode()


def test_the_csp_scanner_finds_what_the_policy_blocks():
    html = (
        '<script>alert(1)</script><script src="/static/a.js"></script><style>p{}</style>'
        '<p style="color:red" onclick="x()">x</p><a href="javascript:go()">go</a><div hx-on:click="x()"></div>'
        '<script src="https://cdn.example.com/htmx.js"></script><script type="application/json">{}</script>'
    )
    assert len(csp_violations(html)) == 7


def sign_in(client: Client, username: str, password: str):
    return client.post(LOGIN, {"username": username, "password": password})


@pytest.mark.django_db
def test_sign_in_through_the_form_with_a_safe_next(client, settings):
    settings.PASSWORD_HASHERS = FAST_HASHERS
    make_user("alice", password=PASSWORD)
    response = client.post(LOGIN, {"username": "alice", "password": PASSWORD, "next": "https://evil.example/"})
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:catalog")
    session = response.cookies[settings.SESSION_COOKIE_NAME]
    assert session["httponly"] and session["samesite"] == "Lax"
    assert response.cookies[settings.CSRF_COOKIE_NAME]["httponly"]

    assert client.post(LOGIN, {"username": "alice", "password": PASSWORD, "next": "/audit/"})["Location"] == "/audit/"


@pytest.mark.django_db
def test_repeated_failures_lock_the_sign_in_and_are_audited(client, settings):
    settings.PASSWORD_HASHERS = FAST_HASHERS
    make_user("alice", password=PASSWORD)
    make_user("bob", password=PASSWORD)
    limit = settings.AXES_FAILURE_LIMIT

    for _ in range(limit - 1):
        response = sign_in(client, "alice", "wrong")
        assert response.status_code == 200
        assert "Please enter a correct username and password" in response.content.decode()
    locked = sign_in(client, "alice", "wrong")
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.content.decode()
    assert csp_violations(locked.content.decode()) == []

    # Now even the right password is refused, and nobody is signed in.
    assert sign_in(client, "alice", PASSWORD).status_code == 429
    assert "_auth_user_id" not in client.session
    # The lockout is per username and address: bob, from the same address, still gets in.
    assert sign_in(Client(), "bob", PASSWORD).status_code == 302

    # One entry per attempt: the failures, then the one that locked and the one refused as locked.
    attempts = AuditEntry.objects.filter(username="alice").order_by("id")
    assert [e.action for e in attempts] == ["login_failed"] * (limit - 1) + ["login_locked_out"] * 2
    assert all(e.outcome == "refused" and e.remote_addr == "127.0.0.1" and e.user is None for e in attempts)
    assert not AuditEntry.objects.filter(reason__contains="wrong").exists()


@pytest.mark.django_db
def test_sign_out_is_a_post_that_confirms(client):
    client.force_login(make_user("alice"))
    assert client.get(reverse("logout")).status_code == 405
    response = client.post(reverse("logout"))
    assert response.status_code == 200
    assert "You have signed out" in response.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_password_change(client, settings):
    settings.PASSWORD_HASHERS = FAST_HASHERS
    user = make_user("alice", password=PASSWORD)
    assert client.get(reverse("password_change")).status_code == 302
    client.force_login(user)
    new = "a much longer new passphrase"
    response = client.post(
        reverse("password_change"), {"old_password": PASSWORD, "new_password1": new, "new_password2": new}
    )
    assert response.status_code == 302 and response["Location"] == reverse("password_change_done")
    assert User.objects.get(pk=user.pk).check_password(new)
    assert "Password changed" in client.get(reverse("password_change_done")).content.decode()


@pytest.mark.django_db
def test_csrf_is_enforced_on_account_and_rule_changes(settings):
    settings.PASSWORD_HASHERS = FAST_HASHERS
    admin = make_user("boss", superuser=True, password=PASSWORD)
    group = admin.groups.create(name="ops")
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)

    forged = [
        client.post(reverse("dashboard:access-rule-add"), {"group": group.pk, "pattern": "*", "role": Role.ADMIN}),
        client.post(reverse("password_change"), {"old_password": PASSWORD, "new_password1": "x" * 20, "new_password2": "x" * 20}),
        client.post(reverse("logout")),
    ]
    assert [response.status_code for response in forged] == [403, 403, 403]
    assert not AccessRule.objects.exists()
    assert User.objects.get(pk=admin.pk).check_password(PASSWORD)
    assert "_auth_user_id" in client.session

    # With the token from the page, the same request goes through.
    client.get(reverse("dashboard:access"))
    token = client.cookies[settings.CSRF_COOKIE_NAME].value
    added = client.post(
        reverse("dashboard:access-rule-add"),
        {"group": group.pk, "pattern": "ops/*", "role": Role.VIEWER, "csrfmiddlewaretoken": token},
    )
    assert added.status_code == 302 and AccessRule.objects.filter(pattern="ops/*").exists()


MARKER = "S3cret-Marker-" + secrets.token_hex(8)


@pytest.fixture
def marked_credentials(settings):
    settings.REGISTRY_USERNAME = "alice"
    settings.REGISTRY_PASSWORD = MARKER


def pages_of_an_admin(client: Client, registry: Registry) -> dict[str, str]:
    """Every page that describes the registry or its errors, as a superuser sees them."""
    client.force_login(make_user("boss", superuser=True))
    urls = {
        "catalog": reverse("dashboard:catalog"),
        "admin registries": reverse("admin:dashboard_registry_changelist"),
        "admin registry": reverse("admin:dashboard_registry_change", args=[registry.pk]),
        "audit": reverse("dashboard:audit"),
        "readyz": "/readyz",
    }
    refreshed = client.post(reverse("dashboard:catalog-refresh"), follow=True)
    htmx = client.post(reverse("dashboard:catalog-refresh"), headers={"HX-Request": "true", "HX-Target": "catalog-results"})
    bodies = {"catalog after refresh": refreshed.content.decode(), "htmx refresh": htmx.content.decode()}
    for name, url in urls.items():
        response = client.get(url)
        assert response.status_code == 200, name
        bodies[name] = response.content.decode()
    return bodies


@pytest.mark.django_db
def test_a_wrong_registry_password_is_never_shown(client, settings, registry_basic, marked_credentials, caplog):
    settings.REGISTRY_URL = registry_basic.url
    caplog.set_level("DEBUG")
    registry = configured_registry()
    bodies = pages_of_an_admin(client, registry)

    registry.refresh_from_db()
    assert registry.last_error, "the registry should have refused the marker password"
    for name, body in bodies.items():
        assert MARKER not in body, name
    assert MARKER not in caplog.text
    assert MARKER not in registry.last_error
    assert not AuditEntry.objects.filter(reason__contains=MARKER).exists()


@pytest.mark.django_db
def test_an_unreachable_registry_error_never_shows_the_password(client, settings, marked_credentials, caplog):
    from tests.support.registry_server import free_port

    settings.REGISTRY_URL = f"http://127.0.0.1:{free_port()}"
    caplog.set_level("DEBUG")
    registry = configured_registry()
    bodies = pages_of_an_admin(client, registry)

    registry.refresh_from_db()
    assert registry.reachable is False
    assert any("127.0.0.1" in body for body in bodies.values()), "the error notice should name the registry"
    for name, body in bodies.items():
        assert MARKER not in body, name
    assert MARKER not in caplog.text


@pytest.mark.django_db
def test_the_right_registry_password_is_never_shown_either(
    client, settings, registry_basic, basic_credentials, basic_pusher, make_repo_name, caplog
):
    username, password = basic_credentials
    basic_pusher.push_image(make_repo_name("secure/"), tags=("v1",))
    settings.REGISTRY_URL = registry_basic.url
    settings.REGISTRY_USERNAME, settings.REGISTRY_PASSWORD = username, password
    caplog.set_level("DEBUG")
    registry = configured_registry()
    bodies = pages_of_an_admin(client, registry)

    registry.refresh_from_db()
    assert registry.reachable and not registry.last_error
    assert "secure/" in bodies["catalog after refresh"]
    for name, body in bodies.items():
        assert password not in body, name
    assert password not in caplog.text


def fail_sign_ins(username: str, times: int, via: str) -> list[int]:
    """Wrong passwords, sent with `via` as X-Forwarded-For (what the proxies wrote)."""
    client = Client(headers={"X-Forwarded-For": via})
    return [client.post(LOGIN, {"username": username, "password": "wrong"}).status_code for _ in range(times)]


@pytest.mark.django_db
def test_behind_trusted_proxies_each_forwarded_address_is_locked_out_on_its_own(settings):
    settings.PASSWORD_HASHERS = FAST_HASHERS
    settings.TRUSTED_PROXY_COUNT = 1
    make_user("alice", password=PASSWORD)
    limit = settings.AXES_FAILURE_LIMIT

    # The client put 192.0.2.66 in the header itself; only the entry the proxy appended counts.
    assert fail_sign_ins("alice", limit, via="192.0.2.66, 198.51.100.1")[-1] == 429
    assert fail_sign_ins("alice", 1, via="198.51.100.2") == [200]
    assert fail_sign_ins("alice", 1, via="192.0.2.66, 198.51.100.1") == [429]
    addresses = AuditEntry.objects.filter(username="alice").values_list("remote_addr", flat=True)
    assert set(addresses) == {"198.51.100.1", "198.51.100.2"}


@pytest.mark.django_db
def test_without_trusted_proxies_the_forwarded_header_is_ignored(settings):
    settings.PASSWORD_HASHERS = FAST_HASHERS
    settings.TRUSTED_PROXY_COUNT = 0
    make_user("alice", password=PASSWORD)
    limit = settings.AXES_FAILURE_LIMIT

    # A client cannot escape the lockout by sending a new address in each request.
    assert fail_sign_ins("alice", limit, via="198.51.100.1")[-1] == 429
    assert fail_sign_ins("alice", 1, via="198.51.100.2") == [429]
    assert set(AuditEntry.objects.filter(username="alice").values_list("remote_addr", flat=True)) == {"127.0.0.1"}


def test_a_negative_proxy_count_is_refused(tmp_path):
    result = manage(tmp_path, "check", TRUSTED_PROXY_COUNT="-1")
    assert result.returncode != 0 and "TRUSTED_PROXY_COUNT must be 0 or more" in result.stderr
