from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver

from dashboard import audit


@receiver(user_login_failed)
def audit_login_failure(sender, credentials: dict, request=None, **kwargs) -> None:
    # Only the username: the password django already masks is not worth keeping either.
    audit.record(
        request,
        "login_failed",
        "refused",
        reason=f"failed login for {credentials.get('username', '')!r}"[:300],
    )
