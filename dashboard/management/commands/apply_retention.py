"""`manage.py apply_retention [--dry-run] [--policy NAME]`: run retention policies from cron or CI.

Plans from the cache like the dashboard's preview (run a sync first for fresh data), then
deletes with the digest guard on every tag. Deletions are audited as the user "system". Exits
with status 1 when a deletion failed in the registry; refusals (a tag moved since the last
sync, a version pinned meanwhile) are reported and leave the tag in place.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard import retention
from dashboard.models import AuditEntry, Repository, RetentionPolicy
from dashboard.registries import configured_registry
from dashboard.templatetags.display import human_size


class Command(BaseCommand):
    help = "Apply the enabled retention policies (or one, with --policy); --dry-run only lists what would go."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="List what would be deleted and kept; change nothing."
        )
        parser.add_argument("--policy", metavar="NAME", help="Run only this policy (even when it is disabled).")

    def handle(self, *args, dry_run: bool = False, policy: str | None = None, **options) -> None:
        chosen = None
        if policy is not None:
            chosen = RetentionPolicy.objects.filter(name=policy).first()
            if chosen is None:
                raise CommandError(f"No retention policy named {policy!r}.")
        registry = configured_registry()
        plan = retention.plan(registry, Repository.objects.all(), chosen)
        if not plan.policies:
            self.stdout.write("No enabled retention policy.")
            return
        self._print_plan(plan)
        if dry_run:
            return
        outcomes = retention.apply(None, None, plan)
        for name, each in outcomes.items():
            for outcome in each:
                what = outcome.tag or f"{outcome.untagged} {outcome.digest}"
                detail = f": {outcome.message}" if outcome.message else ""
                self.stdout.write(f"{outcome.outcome:8} {name}:{what}{detail}")
        counts = retention.summary(outcomes)
        self.stdout.write(
            f"Deleted {counts[AuditEntry.Outcome.OK]} tags, refused {counts[AuditEntry.Outcome.REFUSED]}, "
            f"failed {counts[AuditEntry.Outcome.FAILED]}."
        )
        if counts[AuditEntry.Outcome.FAILED]:
            raise CommandError("Some deletions failed in the registry; see above.")

    def _print_plan(self, plan: retention.Plan) -> None:
        self.stdout.write("Policies: " + "; ".join(f"{p.name} ({retention.describe(p)})" for p in plan.policies))
        for repository in plan.repositories:
            self.stdout.write(
                f"\n{repository.repository.name}: delete {len(repository.delete)}, keep {len(repository.keep)}, "
                f"about {human_size(repository.reclaimable_bytes)} reclaimable"
            )
            for decision in repository.delete:
                whole = " (whole version)" if decision.digest in repository.versions else ""
                self.stdout.write(f"  delete {decision.tag}  {decision.digest}{whole}  {decision.reason}")
            for index, children in repository.children.items():
                for child in children:
                    self.stdout.write(f"  delete platform image {child} of {index}")
            for version, artifacts in repository.attachments.items():
                for artifact in artifacts:
                    tags = f" ({', '.join(artifact.tags)})" if artifact.tags else ""
                    self.stdout.write(f"  delete attached artifact {artifact.digest}{tags} of {version}")
            for reason, decisions in repository.kept_by_reason():
                self.stdout.write(f"  keep   {', '.join(d.tag for d in decisions)}  {reason}")
        self.stdout.write(
            f"\nTotal: {plan.delete_count} tags in {len(plan.with_deletions)} repositories, about "
            f"{human_size(plan.reclaimable_bytes)} reclaimable after the registry's garbage collection."
        )
