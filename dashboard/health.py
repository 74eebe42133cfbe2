"""Probes for a process supervisor or load balancer: liveness and readiness.

Both are public and small: they say nothing a visitor could not learn from an error page.
"""

from __future__ import annotations

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from dashboard.models import Registry


@never_cache
@require_safe
def healthz(request: HttpRequest) -> HttpResponse:
    """The process answers; touches nothing else, so a slow database never restarts it."""
    return HttpResponse("ok\n", content_type="text/plain")


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database answers, else 503.

    The registry's reachability comes from the last ping stored by a sync: an unreachable
    registry is reported but does not take the dashboard out of rotation, because the cached
    pages are still worth serving.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        registry = Registry.objects.filter(url=settings.REGISTRY_URL.rstrip("/")).first()
    except DatabaseError:
        return JsonResponse({"database": "unavailable"}, status=503)
    return JsonResponse({"database": "ok", "registry": _registry_state(registry)})


def _registry_state(registry: Registry | None) -> dict[str, object]:
    if registry is None or registry.last_checked_at is None:
        return {"reachable": None, "last_checked_at": None}
    return {"reachable": registry.reachable, "last_checked_at": registry.last_checked_at.isoformat()}
