"""The configured registry, and a client for it built from settings."""

from contextlib import AbstractContextManager, nullcontext
from functools import partial
from urllib.parse import urlsplit

from django.conf import settings

from dashboard.models import OwnPush, Registry
from dashboard.registry import RegistryClient


def configured_registry() -> Registry:
    """The registry named by REGISTRY_URL, created on first use."""
    url = settings.REGISTRY_URL.rstrip("/")
    registry, _ = Registry.objects.get_or_create(
        url=url, defaults={"name": urlsplit(url).netloc or url}
    )
    return registry


def public_host(registry: Registry) -> str:
    """Host shown in `docker pull` lines: REGISTRY_PUBLIC_HOST, else the registry URL's host."""
    return registry.public_host or settings.REGISTRY_PUBLIC_HOST or urlsplit(registry.url).netloc


def client_for(registry: Registry) -> RegistryClient:
    """A new client; close it (`with client_for(registry) as client:`) to free its connections."""
    verify: bool | str = settings.REGISTRY_VERIFY_TLS
    if verify and settings.REGISTRY_CA_BUNDLE:
        verify = settings.REGISTRY_CA_BUNDLE
    return RegistryClient(
        registry.url,
        username=settings.REGISTRY_USERNAME or None,
        password=settings.REGISTRY_PASSWORD or None,
        verify=verify,
        timeout=(settings.REGISTRY_CONNECT_TIMEOUT, settings.REGISTRY_READ_TIMEOUT),
        retries=settings.REGISTRY_RETRIES,
        allowed_realm_hosts=settings.REGISTRY_TOKEN_REALM_HOSTS,
        before_push=partial(record_own_push, registry),
    )


def client_or_own(registry: Registry, client: RegistryClient | None) -> AbstractContextManager[RegistryClient]:
    """`client` when the caller shares one (and closes it), else a new one closed on leaving."""
    return nullcontext(client) if client is not None else client_for(registry)


def record_own_push(registry: Registry, repository: str, reference: str, digest: str) -> None:
    """Note a push of ours before it is sent, so that its notification is known as ours."""
    OwnPush.objects.create(registry=registry, repository=repository, tag=reference, digest=digest)
