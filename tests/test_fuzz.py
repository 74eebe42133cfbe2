"""Property-based tests: whatever bytes a registry (or anything posing as one) sends, the
parsers return a value or raise their documented error, never anything else.

Each target is a parser with strategies for its arguments and a check. `make test` runs
hypothesis's default number of examples per target; `bench/fuzz.py` runs many more.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timezone
from urllib.parse import urlencode

import pytest
from django.http import QueryDict
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict

from dashboard.forms import CatalogQuery, TagQuery
from dashboard.notifications import InvalidEnvelope, parse_envelope
from dashboard.registries import client_for, configured_registry
from dashboard.registry import mediatypes
from dashboard.registry.auth import Challenge, parse_token_response, parse_www_authenticate
from dashboard.registry.errors import InvalidResponse, RegistryError, error_from_response, parse_retry_after
from dashboard.registry.manifests import (
    ImageIndex,
    ImageManifest,
    align_history,
    is_valid_repository_name,
    is_valid_tag,
    parse_catalog_page,
    parse_image_config,
    parse_manifest,
    parse_tag_list,
)
from dashboard.sync import sync_registry
from tests.personas import make_user
from tests.support.images import ImagePusher
from tests.support.registry_server import RegistryServer


@dataclass(frozen=True)
class Target:
    """A parser under test: `check` is called with one value drawn from each of `arguments`
    and asserts the contract."""

    arguments: tuple[st.SearchStrategy, ...]
    check: Callable[..., None]
    # Inputs that once failed: always tried, whatever the strategy happens to draw.
    regressions: tuple[tuple, ...] = ()


# Building blocks ----------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)


def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly the plausible value, sometimes any JSON value in its place."""
    return st.one_of(strategy, strategy, json_values)


KNOWN_TYPES = sorted(
    mediatypes.IMAGE_MANIFESTS | mediatypes.INDEXES | mediatypes.SCHEMA1 | mediatypes.IMAGE_CONFIGS
) + ["application/vnd.cncf.helm.config.v1+json", "application/vnd.oci.empty.v1+json"]
media_types = st.sampled_from(KNOWN_TYPES) | st.text(max_size=40)
content_types = (
    st.none()
    | st.sampled_from(["", "application/json", "application/octet-stream", "text/plain", "text/html"])
    | media_types
    | st.sampled_from(KNOWN_TYPES).map(lambda t: f"{t.upper()}; charset=utf-8")
)
digests = (
    st.sampled_from(["sha256:" + "a" * 64, "sha512:" + "b" * 128, "sha384:" + "c" * 96, "sha256:abc"])
    | st.text(alphabet="sha256:0123456789abcdefABCDEF", max_size=80)
)
short_text = st.text(max_size=40)
string_maps = st.dictionaries(short_text, short_text, max_size=5)
timestamps = (
    st.datetimes(timezones=st.none() | st.timezones()).map(lambda moment: moment.isoformat())
    | st.sampled_from(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59", "2024-02-30T00:00:00Z", ""])
    | short_text
)
platforms = st.fixed_dictionaries(
    {}, optional={"os": maybe(short_text), "architecture": maybe(short_text), "variant": maybe(short_text)}
)
descriptors = st.fixed_dictionaries(
    {},
    optional={
        "mediaType": maybe(media_types),
        "digest": maybe(digests),
        "size": maybe(st.integers(min_value=-1, max_value=2**63)),
        "annotations": maybe(string_maps),
        "platform": maybe(platforms),
        "artifactType": maybe(media_types),
    },
)
manifest_objects = st.fixed_dictionaries(
    {},
    optional={
        "schemaVersion": maybe(st.sampled_from([1, 2])),
        "mediaType": maybe(media_types),
        "artifactType": maybe(media_types),
        "config": maybe(descriptors),
        "layers": maybe(st.lists(maybe(descriptors), max_size=4)),
        "manifests": maybe(st.lists(maybe(descriptors), max_size=4)),
        "subject": maybe(descriptors),
        "annotations": maybe(string_maps),
        "name": maybe(short_text),
        "tag": maybe(short_text),
        "architecture": maybe(short_text),
    },
)
history_entries = st.fixed_dictionaries(
    {},
    optional={
        "created": maybe(timestamps),
        "created_by": maybe(short_text),
        "comment": maybe(short_text),
        "empty_layer": maybe(st.booleans()),
    },
)
run_settings = st.fixed_dictionaries(
    {},
    optional={
        "Env": maybe(st.lists(maybe(short_text), max_size=4)),
        "Entrypoint": maybe(st.lists(maybe(short_text), max_size=3)),
        "Cmd": maybe(st.lists(maybe(short_text), max_size=3)),
        "WorkingDir": maybe(short_text),
        "User": maybe(short_text),
        "ExposedPorts": maybe(st.dictionaries(short_text, st.just({}), max_size=3)),
        "Volumes": maybe(st.dictionaries(short_text, st.just({}), max_size=3)),
        "Labels": maybe(string_maps),
    },
)
config_objects = st.fixed_dictionaries(
    {},
    optional={
        "created": maybe(timestamps),
        "author": maybe(short_text),
        "os": maybe(short_text),
        "architecture": maybe(short_text),
        "variant": maybe(short_text),
        "config": maybe(run_settings),
        "history": maybe(st.lists(maybe(history_entries), max_size=5)),
    },
)


def encoded(objects: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    """JSON bytes of the objects, sometimes cut short, plus arbitrary bytes and deep nesting."""
    whole = objects.map(lambda value: json.dumps(value).encode())
    cut = whole.flatmap(lambda raw: st.integers(min_value=0, max_value=len(raw)).map(lambda n: raw[:n]))
    nested = st.integers(min_value=1, max_value=100_000).map(lambda depth: b"[" * depth + b"]" * depth)
    return st.one_of(whole, whole, cut, st.binary(max_size=200), nested, json_values.map(lambda v: json.dumps(v).encode()))


# Checks -------------------------------------------------------------------------------------


def check_manifest(raw: bytes, content_type: str | None) -> None:
    try:
        manifest = parse_manifest(raw, content_type)
    except InvalidResponse:
        return
    assert manifest.kind in ("image", "index", "artifact", "schema1", "unknown")
    if isinstance(manifest, ImageManifest):
        assert manifest.total_size >= 0
        for descriptor in (manifest.config, *manifest.layers):
            str(descriptor.platform or "")
    if isinstance(manifest, ImageIndex):
        assert all(str(child.platform or "") is not None for child in manifest.manifests)


def check_config(raw: bytes) -> None:
    try:
        config = parse_image_config(raw)
    except InvalidResponse:
        return
    # What the sync does with a config: store the date (in UTC) and pair history with layers.
    for moment in [config.created, *(entry.created for entry in config.history)]:
        if moment is not None:
            moment.astimezone(timezone.utc)
    align_history((), config.history)
    str(config.platform or "")
    assert all(isinstance(value, str) for value in (*config.env, *config.labels.values()))


def check_list(parse: Callable[[bytes], list[str]], valid: Callable[[object], bool]) -> Callable[[bytes], None]:
    """Lists of names the client builds URLs from: only names it accepts get through."""

    def check(raw: bytes) -> None:
        try:
            names = parse(raw)
        except InvalidResponse:
            return
        assert all(valid(name) for name in names)

    return check


def check_token_response(raw: bytes) -> None:
    try:
        token, lifetime = parse_token_response(raw)
    except InvalidResponse:
        return
    assert isinstance(token, str) and token
    assert math.isfinite(lifetime) and lifetime > 0


def check_www_authenticate(header: str) -> None:
    challenges = parse_www_authenticate(header)
    assert all(isinstance(c, Challenge) and c.scheme == c.scheme.lower() for c in challenges)
    assert all(isinstance(value, str) for c in challenges for value in c.params.values())


def check_challenge_round_trip(challenges: list[tuple[str, dict[str, str]]]) -> None:
    """Well-formed challenges, however spaced, come back with exactly their parameters."""
    header = ", ".join(
        f"{scheme} " + ", ".join(f'{name}="{_quote(value)}"' for name, value in params.items())
        for scheme, params in challenges
    )
    parsed = parse_www_authenticate(header)
    assert [(c.scheme, c.params) for c in parsed] == [(scheme.lower(), params) for scheme, params in challenges]


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def check_envelope(raw: bytes) -> None:
    try:
        events = parse_envelope(raw)
    except InvalidEnvelope:
        return
    for event in events:
        assert event.id and event.action and is_valid_repository_name(event.repository)
        assert event.tag == "" or is_valid_tag(event.tag)
        assert event.timestamp is None or event.timestamp.tzinfo is not None


def check_error_response(status: int, body: bytes, retry_after: str | None) -> None:
    headers = CaseInsensitiveDict({"Retry-After": retry_after} if retry_after is not None else {})
    for method in ("GET", "DELETE"):
        error = error_from_response(status, body, headers, method=method)
        assert isinstance(error, RegistryError)
        assert str(error)


def check_retry_after(value: str | None) -> None:
    seconds = parse_retry_after(value)
    assert seconds is None or seconds >= 0


def check_query(form_class: type[CatalogQuery | TagQuery]) -> Callable[[list[tuple[str, str]]], None]:
    def check(pairs: list[tuple[str, str]]) -> None:
        data = QueryDict(mutable=True)
        for key, value in pairs:
            data.appendlist(key, value)
        form = form_class(data)
        if form.is_valid():
            assert form.ordering()
        else:
            assert form.error_text()

    return check


# Targets ------------------------------------------------------------------------------------

TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"))
challenge_lists = st.lists(
    st.tuples(
        st.text(alphabet=TOKEN, min_size=1, max_size=10),
        st.dictionaries(st.text(alphabet=TOKEN.lower(), min_size=1, max_size=8), header_text, min_size=1, max_size=4),
    ),
    max_size=3,
)
header_soup = st.lists(
    st.sampled_from(["Bearer", "Basic", " ", ",", "=", '"', "\\", "realm", "scope", "a b", "==", "\t"]) | header_text,
    max_size=30,
).map("".join)
token_objects = st.fixed_dictionaries(
    {},
    optional={
        "token": maybe(short_text),
        "access_token": maybe(short_text),
        "expires_in": maybe(st.integers(min_value=-10, max_value=10**6) | st.floats()),
    },
)
error_entries = st.fixed_dictionaries(
    {}, optional={"code": maybe(short_text), "message": maybe(short_text), "detail": json_values}
)
error_bodies = st.fixed_dictionaries({}, optional={"errors": maybe(st.lists(maybe(error_entries), max_size=3))})
retry_after_values = st.none() | header_text | st.integers(min_value=0, max_value=10**12).map(str)
event_targets = st.fixed_dictionaries(
    {},
    optional={
        "mediaType": maybe(media_types),
        "digest": maybe(digests),
        "repository": maybe(st.sampled_from(["app", "team/app", "UPPER", "a//b", ""]) | short_text),
        "tag": maybe(st.sampled_from(["latest", "1.0", ".bad", "x" * 129]) | short_text),
        "size": maybe(st.integers()),
    },
)
events = st.fixed_dictionaries(
    {},
    optional={
        "id": maybe(st.uuids().map(str) | st.text(max_size=120)),
        "action": maybe(st.sampled_from(["push", "pull", "delete", "mount"]) | short_text),
        "timestamp": maybe(timestamps),
        "target": maybe(event_targets),
        "request": maybe(st.fixed_dictionaries({}, optional={"method": maybe(short_text), "useragent": maybe(short_text)})),
    },
)
envelopes = st.fixed_dictionaries({}, optional={"events": maybe(st.lists(maybe(events), max_size=3))})
PAGE_PARAMETERS = ["q", "page", "sort", "namespace", "user", "repository", "action", "outcome", "since", "until"]
query_keys = st.sampled_from([*PAGE_PARAMETERS, "from", "to", "tag", "n", ""]) | short_text
query_values = st.sampled_from(
    [
        "1", "0", "-1", "999999999999999999999", "name", "size", "version", "created", "pushed", "\x00",
        "9999-12-31", "0001-01-01", "2024-02-30", "*", "a/**", "[", "\\", "latest", "sha256:" + "a" * 64, "ok",
    ]
) | st.text(max_size=300)
query_pairs = st.lists(st.tuples(query_keys, query_values), max_size=6)

catalog_pages = st.fixed_dictionaries({}, optional={"repositories": maybe(st.lists(maybe(short_text)))})
tag_lists = st.fixed_dictionaries({}, optional={"name": maybe(short_text), "tags": maybe(st.lists(maybe(short_text)))})
huge_numbers = (b"Infinity", b"NaN", b"1" + b"0" * 400)

TARGETS: dict[str, Target] = {
    "manifest": Target((encoded(manifest_objects), content_types), check_manifest),
    "image-config": Target(
        (encoded(config_objects),), check_config, regressions=((b'{"created": "9999-12-31T23:59:59-23:59"}',),)
    ),
    "catalog-page": Target((encoded(catalog_pages),), check_list(parse_catalog_page, is_valid_repository_name)),
    "tag-list": Target((encoded(tag_lists),), check_list(parse_tag_list, is_valid_tag)),
    "notification-envelope": Target((encoded(envelopes),), check_envelope),
    "token-response": Target(
        (encoded(token_objects),),
        check_token_response,
        regressions=tuple((b'{"token": "t", "expires_in": %s}' % number,) for number in huge_numbers),
    ),
    "www-authenticate": Target((header_soup | st.text(),), check_www_authenticate),
    "www-authenticate-round-trip": Target((challenge_lists,), check_challenge_round_trip),
    "error-response": Target(
        (st.integers(min_value=400, max_value=599), encoded(error_bodies), retry_after_values), check_error_response
    ),
    "retry-after": Target((retry_after_values | st.text(),), check_retry_after, regressions=(("\u00b9",),)),
    "catalog-query": Target((query_pairs,), check_query(CatalogQuery)),
    "tag-query": Target((query_pairs,), check_query(TagQuery)),
}


def run_target(target: Target, max_examples: int | None = None) -> None:
    """Run one target under hypothesis; raises the (shrunk) failing example if there is one."""
    options = {"deadline": None, "database": None, "suppress_health_check": list(HealthCheck)}
    if max_examples is not None:
        options["max_examples"] = max_examples
    test = hypothesis_settings(**options)(lambda drawn: target.check(*drawn))
    for regression in target.regressions:
        test = example(regression)(test)
    given(st.tuples(*target.arguments))(test)()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_parsers_raise_only_their_documented_errors(name: str) -> None:
    run_target(TARGETS[name])


# Whole pages --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_query_strings_get_a_page_or_a_400_never_a_500(
    client: Client, settings, registry: RegistryServer, pusher: ImagePusher, repo_name: str
) -> None:
    """The forms behind every page that reads a query string, through the views, the database
    queries they build and the templates."""
    settings.REGISTRY_URL = registry.url
    pusher.push_image(repo_name, ["1.0", "latest"])
    cache = configured_registry()
    sync_registry(cache, client_for(cache), repository=repo_name)
    client.force_login(make_user("fuzzer", superuser=True))
    pages = [
        reverse("dashboard:catalog"),
        reverse("dashboard:repository", args=[repo_name]),
        reverse("dashboard:rollback", args=[repo_name]),
        reverse("dashboard:compare", args=[repo_name]),
        reverse("dashboard:pins"),
        reverse("dashboard:audit"),
        reverse("dashboard:audit-export"),
    ]

    @given(st.sampled_from(pages), query_pairs, st.booleans())
    @hypothesis_settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(path: str, pairs: list[tuple[str, str]], htmx: bool) -> None:
        headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
        response = client.get(f"{path}?{urlencode(pairs)}", **headers)
        assert response.status_code in (200, 400, 404), (path, pairs, response.status_code)

    check()
