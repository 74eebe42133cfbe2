import pytest
from django.core import checks
from django.core.management import call_command

from dashboard.checks import check_registry_url, check_static_manifest


@pytest.mark.parametrize(
    ("url", "expected_ids"),
    [
        ("http://127.0.0.1:5000", []),
        ("https://registry.example.com", []),
        ("", ["dashboard.W001"]),
        ("registry.example.com:5000", ["dashboard.W002"]),
        ("https://registry.example.com/v2/", ["dashboard.W002"]),
        ("https://bob:secret@registry.example.com", ["dashboard.E001"]),
    ],
)
def test_registry_url_check(settings, url, expected_ids):
    settings.REGISTRY_URL = url

    assert [message.id for message in check_registry_url(None)] == expected_ids


MANIFEST_STORAGE = {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"}


def test_with_debug_off_a_missing_static_manifest_is_an_error_naming_collectstatic(settings, tmp_path):
    settings.DEBUG = False
    settings.STATIC_ROOT = tmp_path
    settings.STORAGES = {**settings.STORAGES, "staticfiles": MANIFEST_STORAGE}

    [error] = check_static_manifest(None)
    assert error.id == "dashboard.E002"
    assert error.level == checks.ERROR
    assert str(tmp_path / "staticfiles.json") in error.msg
    assert "manage.py collectstatic" in error.hint

    call_command("collectstatic", "--noinput", verbosity=0)
    assert check_static_manifest(None) == []


def test_with_debug_on_static_files_need_no_manifest(settings, tmp_path):
    settings.DEBUG = True
    settings.STATIC_ROOT = tmp_path
    settings.STORAGES = {**settings.STORAGES, "staticfiles": MANIFEST_STORAGE}
    assert check_static_manifest(None) == []


def test_signature_public_keys_check(settings, tmp_path):
    from dashboard.checks import check_signature_public_keys
    from tests.support.supplychain import make_key, public_pem

    good = tmp_path / "release.pub"
    good.write_bytes(public_pem(make_key("p384")))
    junk = tmp_path / "junk.pub"
    junk.write_bytes(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    settings.SIGNATURE_PUBLIC_KEYS = [str(good), str(junk), str(tmp_path / "missing.pub")]

    messages = check_signature_public_keys(None)

    assert [(m.id, m.msg) for m in messages] == [
        ("dashboard.E003", f"SIGNATURE_PUBLIC_KEYS: {junk} Not a PEM public key (-----BEGIN PUBLIC KEY-----)."),
        ("dashboard.E003", f"SIGNATURE_PUBLIC_KEYS: {tmp_path / 'missing.pub'} cannot be read."),
    ]
