"""The Prometheus scrape target, behind a bearer token when METRICS_TOKEN is set."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django_prometheus.exports import ExportToDjangoView


def metrics(request: HttpRequest) -> HttpResponse:
    """Request counts and latencies, no repository names; Prometheus sends the token with
    `authorization: {credentials: ...}` (or `bearer_token`) in its scrape config."""
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # compare_digest: how long the comparison takes must not tell how much of a guess was right.
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), token.encode()):
            message = "Send the metrics token: Authorization: Bearer <token>\n"
            response = HttpResponse(message, status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return ExportToDjangoView(request)
