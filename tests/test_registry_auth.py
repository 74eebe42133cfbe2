"""Token-flow pieces on plain text: WWW-Authenticate, realm and link checks, token answers, the cache."""

from __future__ import annotations

import contextlib
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard.registry.auth import (
    DEFAULT_TOKEN_LIFETIME,
    Challenge,
    TokenCache,
    TokenService,
    host_allowed,
    parse_token_response,
    parse_www_authenticate,
    preferred_challenge,
    resolve_on_registry,
    token_service,
)
from dashboard.registry.errors import InvalidResponse

# No deadline: a loaded CI machine must not turn slowness into failures. No example
# database: failures print their example, and the tree stays clean.
PROPERTY = settings(deadline=None, database=None)

REGISTRY = "http://127.0.0.1:5000"

# WWW-Authenticate


def test_distribution_bearer_challenge() -> None:
    header = (
        'Bearer realm="http://127.0.0.1:5098/token",service="registry-lab",'
        'scope="repository:team/app:pull,push repository:base/img:pull",error="insufficient_scope"'
    )
    [challenge] = parse_www_authenticate(header)

    assert challenge.scheme == "bearer"
    assert challenge.realm == "http://127.0.0.1:5098/token"
    assert challenge.service == "registry-lab"
    # The comma inside the quotes stays; the space separates two scopes.
    assert challenge.scopes == ("repository:team/app:pull,push", "repository:base/img:pull")
    assert challenge.error == "insufficient_scope"


def test_case_spacing_tokens_and_escapes() -> None:
    [challenge] = parse_www_authenticate(
        'BEARER  Realm = "https://auth.example/token" , Service=registry , SCOPE="a\\"b"'
    )
    assert challenge == Challenge(
        "bearer", {"realm": "https://auth.example/token", "service": "registry", "scope": 'a"b'}
    )


def test_several_challenges_in_one_header() -> None:
    # requests joins repeated WWW-Authenticate headers with ", ".
    challenges = parse_www_authenticate('Negotiate abc==, Basic realm="registry", Bearer realm="https://a/t",scope="x"')
    assert [c.scheme for c in challenges] == ["negotiate", "basic", "bearer"]
    assert challenges[1].params == {"realm": "registry"}
    preferred = preferred_challenge(challenges)
    assert preferred is not None and preferred.scheme == "bearer"
    assert preferred_challenge(parse_www_authenticate('Basic realm="registry"')) == Challenge(
        "basic", {"realm": "registry"}
    )
    assert preferred_challenge(parse_www_authenticate("Negotiate abc==")) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, []),
        ("", []),
        (",,, ", []),
        ('="x"', []),
        ("Basic", [Challenge("basic")]),
        ('Bearer realm="unterminated', [Challenge("bearer")]),
        ('Bearer realm="x" service="y"', [Challenge("bearer")]),  # missing comma: the parameters are unusable
        ("Bearer realm=", [Challenge("bearer")]),
    ],
)
def test_garbage_headers(header: str | None, expected: list[Challenge]) -> None:
    assert parse_www_authenticate(header) == expected


@PROPERTY
@given(st.text(max_size=200))
def test_parse_www_authenticate_never_raises(header: str) -> None:
    for challenge in parse_www_authenticate(header):
        assert challenge.scheme == challenge.scheme.lower()
        assert isinstance(challenge.scopes, tuple)


@PROPERTY
@given(
    st.lists(
        st.tuples(st.sampled_from(["realm", "service", "scope"]), st.text(st.characters(blacklist_categories=["Cs"]))),
        min_size=1,
        max_size=3,
        unique_by=lambda pair: pair[0],
    )
)
def test_quoted_values_round_trip(params: list[tuple[str, str]]) -> None:
    quoted = ",".join(
        f'{name}="{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for name, value in params
    )
    assert parse_www_authenticate(f"Bearer {quoted}") == [Challenge("bearer", dict(params))]


# Where credentials and registry-supplied URLs may go


@pytest.mark.parametrize(
    ("realm", "allowed", "ok"),
    [
        ("http://127.0.0.1:5001/token", (), True),  # same host, another port: a token service next door
        ("http://127.0.0.1/token", (), True),
        ("https://127.0.0.1:5001/token", (), False),  # another scheme counts as another host
        ("http://localhost:5001/token", (), False),
        ("http://auth.example/token", ("auth.example",), True),
        ("http://auth.example/token", ("AUTH.example:80",), True),
        ("http://auth.example:8080/token", ("auth.example:80",), False),
        ("https://auth.example/token", ("auth.example:443",), True),
        ("ftp://127.0.0.1/token", (), False),
        ("/token", (), False),
        ("http://127.0.0.1:notaport/token", (), False),
        ("http://[::1/token", (), False),
    ],
)
def test_realm_host_check(realm: str, allowed: tuple[str, ...], ok: bool) -> None:
    assert host_allowed(realm, REGISTRY, allowed) is ok


def test_https_registry_never_sends_credentials_over_http() -> None:
    assert host_allowed("https://r.example:8443/token", "https://r.example", ()) is True
    assert host_allowed("http://r.example/token", "https://r.example", ()) is False
    assert host_allowed("http://auth.example/token", "https://r.example", ("auth.example",)) is False


def test_token_service_from_challenge() -> None:
    challenge = Challenge("bearer", {"realm": "http://127.0.0.1:5001/token", "service": "reg"})
    assert token_service(challenge, REGISTRY, ()) == TokenService("http://127.0.0.1:5001/token", "reg")

    with pytest.raises(InvalidResponse, match="allowed realm hosts"):
        token_service(Challenge("bearer", {"realm": "http://evil.example/token"}), REGISTRY, ())
    with pytest.raises(InvalidResponse, match="realm"):
        token_service(Challenge("bearer", {"service": "reg"}), REGISTRY, ())


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("/v2/_catalog?last=org%2Fml%2Fapi-003&n=2", "http://127.0.0.1:5000/v2/_catalog?last=org%2Fml%2Fapi-003&n=2"),
        ("http://127.0.0.1:5000/v2/_catalog?n=2", "http://127.0.0.1:5000/v2/_catalog?n=2"),
        ("?last=b&n=2", "http://127.0.0.1:5000/v2/_catalog?last=b&n=2"),
        ("http://127.0.0.1:5001/v2/_catalog?n=2", None),
        ("https://127.0.0.1:5000/v2/_catalog?n=2", None),
        ("//evil.example/v2/_catalog", None),
        ("http://[::1/v2/", None),
    ],
)
def test_resolve_on_registry(link: str, expected: str | None) -> None:
    assert resolve_on_registry(link, f"{REGISTRY}/v2/_catalog?n=2", REGISTRY) == expected


def test_default_ports_are_the_same_origin() -> None:
    assert (
        resolve_on_registry("http://r.example:80/v2/x", "http://r.example/v2/", "http://r.example")
        == "http://r.example:80/v2/x"
    )


# Token answers and the cache


def test_token_answers() -> None:
    assert parse_token_response(b'{"token": "t1", "expires_in": 300}') == ("t1", 300.0)
    assert parse_token_response(b'{"access_token": "t2"}') == ("t2", DEFAULT_TOKEN_LIFETIME)
    assert parse_token_response(json.dumps({"token": "t3", "access_token": "t3", "issued_at": "x"}).encode())[0] == "t3"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>",
        b"[]",
        b"{}",
        b'{"token": ""}',
        b'{"token": 5}',
        b'{"token": "t", "expires_in": "300"}',
        b'{"token": "t", "expires_in": 0}',
        b'{"token": "t", "expires_in": true}',
    ],
)
def test_bad_token_answers(body: bytes) -> None:
    with pytest.raises(InvalidResponse):
        parse_token_response(body)


@PROPERTY
@given(st.binary(max_size=100))
def test_parse_token_response_raises_only_invalid_response(body: bytes) -> None:
    with contextlib.suppress(InvalidResponse):
        parse_token_response(body)


def test_token_cache_expires_tokens_early() -> None:
    cache = TokenCache()
    stored = cache.put("repository:a:pull", "t", ("repository:a:pull",), lifetime=0.2)
    assert cache.get("repository:a:pull") == stored
    assert cache.get("repository:b:pull") is None
    time.sleep(0.19)  # before expires_in, but past the share of it we trust
    assert cache.get("repository:a:pull") is None
