"""Signing in: Django's login view, telling when it cannot work over this connection."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import views as auth_views


class LoginView(auth_views.LoginView):
    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        # Browsers keep Secure cookies away from plain http: the CSRF and session cookies never
        # come back, and signing in would only show the empty form again.
        context["cookies_need_https"] = settings.SESSION_COOKIE_SECURE and not self.request.is_secure()
        return context
