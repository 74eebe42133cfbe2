"""The endpoint the registry sends its notifications to (machine to machine)."""

from __future__ import annotations

import hmac
from collections import Counter

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from dashboard.notifications import (
    ENVELOPE_MEDIA_TYPES,
    InvalidEnvelope,
    TooManyEvents,
    handle_events,
    parse_envelope,
)
from dashboard.registries import configured_registry
from dashboard.tasks import process_delete_notification_task, process_notification_task


@csrf_exempt  # the registry cannot send a CSRF token; the shared secret authenticates it
@require_POST
def registry_events(request: HttpRequest) -> HttpResponse:
    secret = settings.REGISTRY_NOTIFICATIONS_SECRET
    if not secret:
        return _plain(
            "Registry notifications are turned off: set REGISTRY_NOTIFICATIONS_SECRET to accept them.", status=503
        )
    sent = request.headers.get(settings.REGISTRY_NOTIFICATIONS_HEADER, "")
    if not hmac.compare_digest(sent.encode(), secret.encode()):
        return _plain(f"Missing or wrong {settings.REGISTRY_NOTIFICATIONS_HEADER} header.", status=401)
    if request.content_type not in ENVELOPE_MEDIA_TYPES:
        return _plain(f"Expected one of {', '.join(sorted(ENVELOPE_MEDIA_TYPES))}.", status=415)
    limit = settings.REGISTRY_NOTIFICATIONS_MAX_BYTES
    body = request.read(limit + 1)
    if len(body) > limit:
        return _plain(f"Envelopes are limited to {limit} bytes.", status=413)
    try:
        events = parse_envelope(body)
    except TooManyEvents as error:
        return _plain(f"Envelope refused: {error}.", status=413)
    except InvalidEnvelope as error:
        return _plain(f"Not a notification envelope: {error}.", status=400)
    registry = configured_registry()
    to_check = handle_events(registry, events)
    for event in to_check:
        # Queued for the worker (TASK_BACKEND=database) or run here (immediate); a failure is
        # logged by the task queue and the next periodic sync repairs what it did not do.
        check = process_notification_task if event.action == "push" else process_delete_notification_task
        check.enqueue(registry.pk, event.repository, event.tag, event.digest)
    counts = Counter(event.action for event in to_check)
    return JsonResponse({"events": len(events), "pushes": counts["push"], "deletes": counts["delete"]})


def _plain(message: str, *, status: int) -> HttpResponse:
    return HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
