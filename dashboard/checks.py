from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage
from django.core import checks


@checks.register()
def check_registry_url(app_configs, **kwargs) -> list[checks.CheckMessage]:
    url = settings.REGISTRY_URL
    if not url:
        return [
            checks.Warning(
                "REGISTRY_URL is not set.",
                hint="Set it to your registry's address, e.g. http://127.0.0.1:5000.",
                id="dashboard.W001",
            )
        ]
    parts = urlsplit(url)
    if parts.username or parts.password:
        # The URL is shown on pages; credentials belong in REGISTRY_USERNAME / REGISTRY_PASSWORD.
        return [
            checks.Error(
                "REGISTRY_URL must not contain credentials.",
                hint="Move them to REGISTRY_USERNAME and REGISTRY_PASSWORD.",
                id="dashboard.E001",
            )
        ]
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return [
            checks.Warning(
                f"REGISTRY_URL {url!r} is not a registry base URL.",
                hint="Use scheme, host and optional port only, e.g. https://registry.example.com:5000.",
                id="dashboard.W002",
            )
        ]
    return []


@checks.register()
def check_static_manifest(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """With DEBUG off, WhiteNoise's manifest storage resolves every {% static %} through the
    manifest collectstatic writes: without it, every page is a 500 that names no cause."""
    if settings.DEBUG or not isinstance(staticfiles_storage, ManifestFilesMixin):
        return []
    if staticfiles_storage.exists(staticfiles_storage.manifest_name):
        return []
    return [
        checks.Error(
            f"The static files manifest {staticfiles_storage.path(staticfiles_storage.manifest_name)} is missing: "
            "with DEBUG off every page would fail with 'Missing staticfiles manifest entry'.",
            hint="Run `python manage.py collectstatic --noinput` (once per release), or set STATIC_ROOT to "
            "where it wrote its files.",
            id="dashboard.E002",
        )
    ]


@checks.register()
def check_signature_public_keys(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """Each SIGNATURE_PUBLIC_KEYS file must hold a key the dashboard can check signatures with:
    a key left out silently would show every version it signed as unverified."""
    from dashboard.attachments import key_files
    from dashboard.supplychain.signatures import load_public_key

    errors = []
    for path, pem in key_files():
        try:
            load_public_key(pem)
        except ValueError as error:
            reason = "cannot be read" if not pem else str(error)
            message = f"SIGNATURE_PUBLIC_KEYS: {path} {reason}."
            errors.append(checks.Error(message, hint="List PEM public key files.", id="dashboard.E003"))
    return errors
