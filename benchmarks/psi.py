"""ECDH-PSI (src/fedsilo/vertical/psi.py): wall time per phase and bytes each party sends, for
two parties with N IDs each, half of them shared (the vertical-FL row alignment).

Both parties run in one process, one after the other, through the message functions (no
transport): the figures are the protocol's compute (SHA-512 + Elligator 2 hashing and libsodium
scalar multiplications on edwards25519, with their subgroup checks) and the size of the messages
as they would go on the wire (32 bytes per group element, 4 per position).

    .venv/bin/python benchmarks/psi.py [--n 1000000] [--workers 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from fedsilo.vertical.psi import ELEMENT_BYTES, PsiParty, PsiResponse, new_salt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=float, default=1e6, help="IDs per party (default 1e6)")
    parser.add_argument("--workers", type=int, default=1, help="threads per party")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    n = int(args.n)
    shared = n // 2
    rng = np.random.default_rng(args.seed)
    numbers = rng.choice(10 * n, 2 * n - shared, replace=False)
    ids_a = [f"C-{int(i):08d}" for i in numbers[:n]]
    ids_b = [f"C-{int(i):08d}" for i in numbers[n - shared:]]
    rng.shuffle(ids_b)
    salt = new_salt()

    phases: dict[str, float] = {}

    def timed(name: str, fn, *a, **kw):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        phases[name] = time.perf_counter() - t0
        return out

    a = PsiParty(ids_a, salt, name="A", workers=args.workers)
    b = PsiParty(ids_b, salt, name="B", workers=args.workers)
    request = timed("A: hash + blind own IDs (request)", a.blinded_ids)
    double = timed("B: blind A's request", b.blind, request)
    own = timed("B: hash + blind own IDs", b.blinded_ids)
    response = PsiResponse(double, own)
    matches = timed("A: blind B's IDs + match", a.match, response)
    alignment = timed("A: align (common order)", a.align, {"B": matches}, {"B": len(own)})
    rows_b = timed("B: map positions to rows", b.rows_for, alignment.positions["B"])

    assert len(alignment.rows) == len(rows_b) == shared
    assert all(ids_a[i] == ids_b[j] for i, j in zip(alignment.rows[:1000], rows_b[:1000]))
    sent = {"A": ELEMENT_BYTES * len(request) + 4 * len(alignment.positions["B"]),
            "B": ELEMENT_BYTES * (len(double) + len(own))}
    total = sum(phases.values())
    print(f"ECDH-PSI, 2 parties x {n:,} IDs, {shared:,} shared, {args.workers} thread(s)/party")
    for name, seconds in phases.items():
        print(f"  {name:<38} {seconds:9.2f} s")
    print(f"  {'total':<38} {total:9.2f} s")
    for party, nbytes in sent.items():
        print(f"  bytes sent by {party}: {nbytes:,} ({nbytes / 2**20:.1f} MiB)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"n": n, "shared": shared, "workers": args.workers, "phases_s": phases,
                       "total_s": total, "bytes_sent": sent}, f, indent=2)


if __name__ == "__main__":
    main()
