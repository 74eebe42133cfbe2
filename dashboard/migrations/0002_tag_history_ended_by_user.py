import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def split_users(apps, schema_editor):
    """Until now a period held one user. A delete named its user there only on periods nobody
    had started, so those move to `ended_by_user`; a restore that ended a period named its user
    on the period it opened at that same moment."""
    TagHistory = apps.get_model("dashboard", "TagHistory")
    ended_by_user = TagHistory.objects.filter(ended_by="user")
    # SQL reads the old `user` on the right-hand side, so this swaps in one statement.
    ended_by_user.exclude(started_by="user").exclude(user=None).update(ended_by_user=models.F("user"), user=None)
    for period in ended_by_user.filter(ended_by_user=None):
        opened = TagHistory.objects.filter(
            repository_id=period.repository_id, tag=period.tag, since=period.until, started_by="user"
        ).exclude(user=None)
        period.ended_by_user_id = opened.values_list("user_id", flat=True).first()
        if period.ended_by_user_id is not None:
            period.save(update_fields=["ended_by_user"])


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="taghistory",
            name="ended_by_user",
            field=models.ForeignKey(
                blank=True,
                help_text="The user whose action ended the period.",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="taghistory",
            name="user",
            field=models.ForeignKey(
                blank=True,
                help_text="The user whose action started the period.",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(split_users, migrations.RunPython.noop),
    ]
