"""CI's verdict on a pytest log: some test ran, and every skip is one CI accepts.

    python3 .ci/check_run.py PYTEST_LOG .ci/allowed-skips

Prints every skip with its reason and whether it is allowed; exits 1 when no
test passed or when a test skipped for a reason that no line of the allow-list
matches (a test that must run in CI and did not is a red run, never a quiet one).
"""

from __future__ import annotations

import re
import sys

SKIPPED = re.compile(r"^SKIPPED \[\d+\] (\S+?):? (.*)$", re.M)
#: pytest's closing line: "714 passed, 4 skipped in 420.73s (0:07:00)"
SUMMARY = re.compile(r"^=*\s*(?:(\d+) passed)?[^\n]* in [0-9.]+s\b", re.M)


def verdict(log: str, allow_list: str) -> tuple[int, list[str]]:
    allowed = [
        re.compile(line.strip())
        for line in allow_list.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    lines: list[str] = []
    summaries = SUMMARY.findall(log)
    passed = int(summaries[-1] or 0) if summaries else 0
    if passed == 0:
        lines.append(".ci/run: no test ran")
        return 1, lines
    skips = SKIPPED.findall(log)
    bad = [(where, why) for where, why in skips if not any(p.search(why) for p in allowed)]
    lines.append(f".ci/run: {passed} passed, {len(skips)} skipped, {len(bad)} skip(s) not allowed")
    for where, why in skips:
        mark = "NOT ALLOWED" if (where, why) in bad else "allowed"
        lines.append(f"  {mark}: {where} {why}")
    return (1 if bad else 0), lines


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8", errors="replace") as log, open(
        argv[2], encoding="utf-8"
    ) as allow:
        code, lines = verdict(log.read(), allow.read())
    print("\n".join(lines))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
