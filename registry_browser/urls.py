from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from dashboard import accounts, health
from registry_browser.metrics import metrics

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    # Prometheus scrape target; see registry_browser/metrics.py for its optional token.
    path("metrics", metrics, name="metrics"),
    path("admin/", admin.site.urls),
    # Only what works without an e-mail server: no password reset by mail.
    path("accounts/login/", accounts.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path(
        "accounts/password_change/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("", include("dashboard.urls")),
]
