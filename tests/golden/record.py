"""Record the golden results: `.venv/bin/python tests/golden/record.py` runs every combination
of tests/golden/combos.py on the current code and writes tests/golden/golden.json.

Options: --out PATH (write elsewhere, e.g. to compare two recordings), --reverse (run the
combinations in reverse order: a check that no result depends on what ran before)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `tests` importable as a script

from tests.golden.combos import COMBOS, GOLDEN, dumps, key, run_combo  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=GOLDEN)
    parser.add_argument("--reverse", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    order = list(reversed(COMBOS)) if args.reverse else COMBOS
    records = {}
    start = time.perf_counter()
    for combo in order:
        t = time.perf_counter()
        records[key(*combo)] = run_combo(*combo)
        rec = records[key(*combo)]
        what = f"refused ({rec['stage']})" if "refused" in rec else rec["digest"][:12]
        print(f"{key(*combo):40s} {time.perf_counter() - t:6.2f}s  {what}", flush=True)
    ordered = {key(*c): records[key(*c)] for c in COMBOS}
    args.out.write_text(dumps(ordered))
    refused = sum("refused" in r for r in ordered.values())
    print(f"{len(ordered)} combinations: {len(ordered) - refused} recorded, {refused} refused, "
          f"{time.perf_counter() - start:.1f}s -> {args.out}")


if __name__ == "__main__":
    main()
