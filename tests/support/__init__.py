"""Test-only helpers that run real registries and push real images; no project code in here."""
