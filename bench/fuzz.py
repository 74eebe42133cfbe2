"""Run the property-based parser tests of tests/test_fuzz.py with many more examples.

    .venv/bin/python bench/fuzz.py                      # 20,000 examples per target
    .venv/bin/python bench/fuzz.py --examples 2000 --target manifest --target tag-list

Prints, per target, how many inputs were tried, how long it took and the first failure
(hypothesis shrinks it to a minimal example). Exits 1 when any target failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "registry_browser.settings")
    import django

    django.setup()
    from tests.test_fuzz import TARGETS, Target, run_target

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=20_000, help="examples per target (default 20000)")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), help="only these targets (repeatable)")
    args = parser.parse_args()

    failures = 0
    print(f"{'target':<30} {'inputs':>8} {'seconds':>8}  result")
    for name in args.target or sorted(TARGETS):
        target = TARGETS[name]
        tried = 0

        def counted(*example: object, check=target.check) -> None:
            nonlocal tried
            tried += 1
            check(*example)

        started = time.monotonic()
        try:
            run_target(Target(target.arguments, counted), args.examples)
            result = "ok"
        except Exception as exc:  # noqa: BLE001 - any exception is a finding to report, not to crash on
            failures += 1
            result = f"FAILED: {type(exc).__name__}: {exc}"
            traceback.print_exc()
        print(f"{name:<30} {tried:>8} {time.monotonic() - started:>8.1f}  {result}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
