import pytest

from dashboard.checks import check_registry_url


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
