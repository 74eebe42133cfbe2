"""Make an API token without a browser: `manage.py create_api_token USERNAME NAME [--read-only] [--expires-days N]`."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError

from dashboard import audit
from dashboard.models import MAX_TOKEN_DAYS, ApiToken, AuditEntry


class Command(BaseCommand):
    help = (
        "Create an API token for USERNAME and print it once (only its hash is kept), e.g. to set up CI. "
        "The token acts with that user's roles."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("name", help="What will use it, e.g. 'deploy pipeline'.")
        parser.add_argument("--read-only", action="store_true", help="May read, but not pin, unpin, restore or delete.")
        parser.add_argument(
            "--expires-days", type=int, metavar="N", help=f"Refused after N days (1 to {MAX_TOKEN_DAYS}); default: never."
        )

    def handle(self, *args, username: str, name: str, read_only: bool, expires_days: int | None, **options) -> None:
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        if not user.is_active:
            raise CommandError(f"User {username!r} is inactive: a token of theirs would be refused.")
        name = name.strip()
        if not name or len(name) > ApiToken._meta.get_field("name").max_length:
            raise CommandError("NAME must be 1 to 100 characters.")
        if expires_days is not None and not 1 <= expires_days <= MAX_TOKEN_DAYS:
            raise CommandError(f"--expires-days must be between 1 and {MAX_TOKEN_DAYS}, got {expires_days}.")
        created, token = ApiToken.issue(user, name, read_only=read_only, expires_in_days=expires_days)
        audit.record(None, "api_token_create", AuditEntry.Outcome.OK, reason=f"{created} for {user}: {created.terms}")
        self.stderr.write(f"Created {created} for {user} ({created.terms}). It is shown once, here:")
        # Alone on stdout, so `TOKEN=$(manage.py create_api_token …)` captures just the token.
        self.stdout.write(token)
