import pytest
import dashboard.access as access
from tests import test_persona_matrix as m
from tests.test_persona_matrix import images, world  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("route", ["dashboard:api-repositories", "dashboard:retention-preview"])
def test_mutant_leak(monkeypatch, world, route):
    monkeypatch.setattr(access, "visible_names", lambda user, field: None)
    m.test_route_for_every_persona(world, route)
