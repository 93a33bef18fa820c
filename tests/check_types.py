"""mypy on `engine/`, held to a baseline that only shrinks.

`tests/mypy-baseline.txt` lists the errors mypy reported when the check was introduced, as a file
and an error code per error (no line numbers, so that an edit elsewhere does not move them, and no
message, whose words change with numpy's and matplotlib's stubs). The check fails on any error
beyond the baseline, and on a baseline entry that no longer occurs: then the baseline is rewritten
smaller with `python tests/check_types.py --update`, so it never grows back.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "tests" / "mypy-baseline.txt"
_ERROR = re.compile(r"^(?P<file>[^:]+):\d+: error: (?P<message>.*)  \[(?P<code>[a-z-]+)\]$")


def current() -> tuple[Counter[str], list[str]]:
    """mypy's errors now as `file [code]`, and as mypy wrote them."""
    out = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", "--hide-error-context",
                          "--no-pretty", "--show-error-codes"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode not in (0, 1) or (out.returncode == 1 and "error:" not in out.stdout):
        sys.exit(f"mypy did not run: {out.stdout}{out.stderr}")
    found = [m for m in map(_ERROR.match, out.stdout.splitlines()) if m]
    return Counter(f"{m['file']} [{m['code']}]" for m in found), [m.group(0) for m in found]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--update", action="store_true", help="rewrite the baseline (it may only shrink)")
    args = parser.parse_args()
    now, written = current()
    before = Counter(line for line in BASELINE.read_text(encoding="utf-8").splitlines() if line.strip())
    new, fixed = now - before, before - now
    if args.update:
        if new:
            print("not updated: these errors are new, fix them instead:", *sorted(new.elements()), sep="\n  ")
            return 1
        BASELINE.write_text("".join(f"{e}\n" for e in sorted(now.elements())), encoding="utf-8")
        print(f"baseline: {sum(now.values())} errors (was {sum(before.values())})")
        return 0
    for e in sorted(new):
        file, code = e.split(" ")
        print(f"new mypy error in {file} {code}:", *[w for w in written if w.startswith(file) and w.endswith(code)],
              sep="\n  ")
    if fixed:
        print(f"{sum(fixed.values())} baseline errors are fixed: shrink the baseline with "
              "`python tests/check_types.py --update`", *sorted(fixed.elements()), sep="\n  ")
    if not new and not fixed:
        print(f"mypy: {sum(now.values())} errors, all in the baseline")
    return 1 if new or fixed else 0


if __name__ == "__main__":
    sys.exit(main())
