"""A database outage answered as what it is: a 503 the client may retry, not a 500."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

logger = logging.getLogger(__name__)

# Seconds a client should wait: long enough for a database restart or failover.
RETRY_AFTER = 30


class DatabaseUnavailableMiddleware:
    """Turns OperationalError and InterfaceError raised by a view (lost connection, locked or
    missing database) into a 503 page. Other database errors are bugs and stay 500s."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        logger.error("Database unavailable during %s %s: %s", request.method, request.path, exception)
        # Rendered without the request: its context processors would query the database again.
        response = HttpResponse(render_to_string("503.html"), status=503)
        response["Retry-After"] = str(RETRY_AFTER)
        return response
