"""ECDH-PSI (fedsilo.vertical.psi): exact intersections, aligned rows, cardinality-only mode and
what the messages reveal (statistically: the blinded elements look like random group elements)."""

from __future__ import annotations

import hashlib

import nacl.bindings as sodium
import numpy as np
import pytest
from scipy import stats

from fedsilo.errors import DataError, ProtocolError
from fedsilo.vertical import psi
from fedsilo.vertical.psi import PsiParty, intersect

SALT = b"fedsilo-test-salt-0123456789abcdef"


def make_sets(n_a: int, n_b: int, shared: int, seed: int = 0,
              fmt: str = "C-{:06d}") -> tuple[list[str], list[str], set[str]]:
    rng = np.random.default_rng(seed)
    pool = [fmt.format(int(i)) for i in rng.choice(10 * (n_a + n_b), n_a + n_b - shared,
                                                   replace=False)]
    common = pool[:shared]
    a = common + pool[shared:shared + n_a - shared]
    b = common + pool[shared + n_a - shared:]
    rng.shuffle(a)
    rng.shuffle(b)
    return a, b, set(common)


def exchange(a: PsiParty, b: PsiParty, *, cardinality_only: bool = False):
    request = a.blinded_ids()
    return request, b.respond(request, cardinality_only=cardinality_only)


@pytest.mark.parametrize(("n_a", "n_b", "shared"), [
    (5, 7, 0), (300, 200, 0), (300, 200, 1), (300, 200, 57), (200, 200, 200), (150, 400, 150),
])
def test_exactly_the_intersection(n_a: int, n_b: int, shared: int) -> None:
    a, b, common = make_sets(n_a, n_b, shared, seed=shared)
    rows = intersect({"a": a, "b": b}, SALT, rng=np.random.default_rng(1), min_overlap=0)
    assert len(rows["a"]) == len(rows["b"]) == shared
    assert {a[i] for i in rows["a"]} == common
    assert [a[i] for i in rows["a"]] == [b[j] for j in rows["b"]]


def test_rows_line_up_across_three_parties() -> None:
    rng = np.random.default_rng(3)
    universe = [f"cust{i}" for i in range(2000)]
    sets = {name: [universe[int(i)] for i in rng.choice(2000, size, replace=False)]
            for name, size in [("bank", 1200), ("insurer", 1500), ("telco", 1000)]}
    common = set(sets["bank"]) & set(sets["insurer"]) & set(sets["telco"])
    rows = intersect(sets, SALT, hub="insurer", rng=np.random.default_rng(4))
    assert list(rows) == ["bank", "insurer", "telco"]
    aligned = {name: [sets[name][r] for r in rows[name]] for name in sets}
    assert aligned["bank"] == aligned["insurer"] == aligned["telco"]
    assert set(aligned["bank"]) == common and len(common) > 100
    # the common order is a secret random one, not the hub's row order
    assert rows["insurer"] != sorted(rows["insurer"])


def test_os_randomness_by_default() -> None:
    a, b, common = make_sets(120, 130, 60, seed=5)
    rows = intersect({"a": a, "b": b})
    assert [a[i] for i in rows["a"]] == [b[j] for j in rows["b"]]
    assert set(a[i] for i in rows["a"]) == common


def test_duplicates_are_refused_with_a_reason() -> None:
    with pytest.raises(DataError, match=r"'C-2' at rows 1, 3.*deduplicate"):
        PsiParty(["C-1", "C-2", "C-3", "C-2"], SALT, name="bank")
    with pytest.raises(DataError, match="must be strings"):
        PsiParty(["C-1", 2], SALT)  # type: ignore[list-item]


def test_short_salt_is_refused() -> None:
    with pytest.raises(DataError, match="salt"):
        PsiParty(["x"], b"short")


def test_formatting_mismatch_shows_only_own_ids() -> None:
    a = [f"C-{i:06d}" for i in range(1000)]
    b = [str(i) for i in range(1000)]  # the same customers, without prefix and zeros
    with pytest.raises(DataError) as err:
        intersect({"hub": a, "peer": b}, SALT, rng=np.random.default_rng(0))
    message = str(err.value)
    assert "0 of 1,000" in message and "'C-0" in message and "leading zeros" in message
    assert "'A-999999'" in message  # the shape of the hub's IDs
    assert not any(f"'{x}'" in message for x in b)
    # the responder, told of an empty intersection, reports its own format only
    party = PsiParty(b, SALT, np.random.default_rng(1), name="peer")
    party.respond(PsiParty(a, SALT, np.random.default_rng(2)).blinded_ids())
    with pytest.raises(DataError) as err:
        party.rows_for([])
    assert "'A-999999'" not in str(err.value) and "'9" in str(err.value)
    assert "C-" not in str(err.value)


def test_cardinality_only_reveals_the_size() -> None:
    a, b, common = make_sets(300, 250, 80, seed=7)
    hub, peer = PsiParty(a, SALT, np.random.default_rng(8)), PsiParty(b, SALT,
                                                                       np.random.default_rng(9))
    _, response = exchange(hub, peer, cardinality_only=True)
    assert hub.cardinality(response) == 80
    # the same elements as the ordered answer, in another order
    ordered = peer.blind(hub.blinded_ids())
    assert sorted(response.double) == sorted(ordered) and response.double != ordered


def test_cardinality_only_hides_which_rows_matched() -> None:
    # A's request has n elements, one shared with B. What A sees matching in B's answer is a
    # position in `double`; its offset from the shared ID's position in A's request must be
    # uniform (a random permutation independent of the match), whereas the ordered answer
    # gives it away (offset 0).
    n, runs = 16, 320
    offsets = {True: [], False: []}
    for run in range(runs):
        a = [f"a{run}-{i}" for i in range(n - 1)] + ["shared"]
        b = ["shared"] + [f"b{run}-{i}" for i in range(n - 1)]
        for shuffle in (True, False):
            hub = PsiParty(a, SALT, np.random.default_rng(10_000 + run))
            peer = PsiParty(b, SALT, np.random.default_rng(20_000 + run))
            request, response = exchange(hub, peer, cardinality_only=shuffle)
            mine = set(hub.blind(response.own))
            [seen] = [i for i, e in enumerate(response.double) if e in mine]
            asked = request.index(hub.blind([psi.hash_to_group("shared", SALT)])[0])
            offsets[shuffle].append((seen - asked) % n)
    assert set(offsets[False]) == {0}
    counts = np.bincount(offsets[True], minlength=n)
    assert stats.chisquare(counts).pvalue > 1e-4
    assert counts[0] < runs / 4


def random_elements(count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        k = sodium.crypto_core_ed25519_scalar_reduce(rng.bytes(64))
        if any(k):
            out.append(bytes(sodium.crypto_scalarmult_ed25519_base_noclamp(k)))
    return out


def leading_u32(elements: list[bytes]) -> np.ndarray:
    return np.array([int.from_bytes(e[:4], "little") for e in elements], dtype=np.float64)


def test_blinded_non_shared_elements_look_like_random_group_elements() -> None:
    n = 5000
    a, b, common = make_sets(n + 100, n + 100, 100, seed=11)
    hub, peer = PsiParty(a, SALT, np.random.default_rng(12)), PsiParty(b, SALT,
                                                                       np.random.default_rng(13))
    request, response = exchange(hub, peer)
    hub_rows = [hub._order[i] for i in range(len(request))]  # type: ignore[index]
    peer_rows = [peer._order[j] for j in range(len(response.own))]  # type: ignore[index]
    seen = {
        "request": [e for e, r in zip(request, hub_rows) if a[r] not in common],
        "double": [e for e, r in zip(response.double, hub_rows) if a[r] not in common],
        "own": [e for e, r in zip(response.own, peer_rows) if b[r] not in common],
    }
    reference = random_elements(n, seed=14)
    for name, elements in seen.items():
        assert len(elements) == n, name
        assert all(sodium.crypto_core_ed25519_is_valid_point(e) for e in elements), name
        assert len(set(elements)) == n, name
        # byte 0 (low bits of y) against random group elements: a 2 x 256 contingency table
        table = np.array([np.bincount([e[0] for e in elements], minlength=256),
                          np.bincount([e[0] for e in reference], minlength=256)])
        assert stats.chi2_contingency(table).pvalue > 1e-4, name
        # the leading 32 bits, two-sample Kolmogorov-Smirnov and against uniform
        assert stats.ks_2samp(leading_u32(elements), leading_u32(reference)).pvalue > 1e-4, name
        assert stats.kstest(leading_u32(elements) / 2**32, "uniform").pvalue > 1e-4, name
        # byte 31: 7 high bits of y (y < 2^255 - 19) and the sign of x
        assert stats.chisquare(np.bincount([e[31] for e in elements], minlength=256)).pvalue \
            > 1e-4, name


def test_no_id_or_plain_hash_on_the_wire() -> None:
    a, b, _ = make_sets(400, 300, 120, seed=15)
    hub, peer = PsiParty(a, SALT, np.random.default_rng(16)), PsiParty(b, SALT,
                                                                       np.random.default_rng(17))
    request, response = exchange(hub, peer)
    alignment = hub.align({"peer": hub.match(response)}, {"peer": len(response.own)})
    positions = np.asarray(alignment.positions["peer"], dtype="<u4").tobytes()
    wire = psi.pack(request) + psi.pack(response.double) + psi.pack(response.own) + positions
    assert psi.unpack(psi.pack(request)) == request
    assert all(len(e) == psi.ELEMENT_BYTES for e in request + response.double + response.own)
    for x in a + b:
        raw = x.encode("utf-8")
        for needle in (raw, hashlib.sha256(raw).digest(), hashlib.sha512(raw).digest(),
                       hashlib.sha256(raw).digest()[:16], hashlib.sha512(raw).digest()[:16],
                       psi.hash_to_group(x, SALT), psi.hash_to_group(x, SALT)[:16]):
            assert needle not in wire, x
    assert peer.rows_for(alignment.positions["peer"]) == [b.index(a[r]) for r in alignment.rows]


def test_another_salt_gives_unrelated_values() -> None:
    ids = [f"C-{i:06d}" for i in range(300)]
    other = SALT[::-1]
    h1 = [psi.hash_to_group(x, SALT) for x in ids]
    h2 = [psi.hash_to_group(x, other) for x in ids]
    assert not set(h1) & set(h2)
    bits = [bin(int.from_bytes(u, "little") ^ int.from_bytes(v, "little")).count("1")
            for u, v in zip(h1, h2)]
    assert 120 < np.mean(bits) < 136  # about half of 256 bits differ
    # the same key under two salts: nothing matches
    hub = PsiParty(ids, SALT, np.random.default_rng(18))
    peer = PsiParty(ids, other, np.random.default_rng(19))
    _, response = exchange(hub, peer)
    assert hub.match(response) == {}
    assert not set(hub.blinded_ids()) & set(PsiParty(ids, other, np.random.default_rng(18))
                                             .blinded_ids())


def test_malformed_messages_are_refused() -> None:
    party = PsiParty(["x", "y"], SALT, np.random.default_rng(20))
    with pytest.raises(ProtocolError, match="bytes"):
        party.blind([b"\x01" * 31])
    identity = b"\x01" + b"\x00" * 31  # small order
    with pytest.raises(ProtocolError, match="prime-order"):
        party.blind([identity])
    with pytest.raises(ProtocolError, match="not a list"):
        psi.unpack(b"\x00" * 33)
    hub = PsiParty(["x", "y", "z"], SALT, np.random.default_rng(21))
    _, response = exchange(hub, party)
    with pytest.raises(ProtocolError, match="request of 3"):
        hub.match(psi.PsiResponse(response.double[:2], response.own))
    with pytest.raises(ProtocolError, match="distinct"):
        party.rows_for([0, 0])
    with pytest.raises(ProtocolError, match="distinct"):
        party.rows_for([5])


def test_threads_give_the_same_answer() -> None:
    a, b, common = make_sets(9000, 100, 50, seed=22)
    one = intersect({"a": a, "b": b}, SALT, rng=np.random.default_rng(23))
    two = intersect({"a": a, "b": b}, SALT, rng=np.random.default_rng(23), workers=2)
    assert one == two and {a[i] for i in one["a"]} == common


def test_tiny_overlap_of_large_sets_is_reported_small_sets_are_not() -> None:
    a, b, _ = make_sets(300, 200, 1, seed=24)
    with pytest.raises(DataError, match="1 of 300 IDs are shared with b"):
        intersect({"a": a, "b": b}, SALT, rng=np.random.default_rng(25))
    a, b, _ = make_sets(300, 200, 2, seed=24)
    assert len(intersect({"a": a, "b": b}, SALT, rng=np.random.default_rng(25))["b"]) == 2
    a, b, _ = make_sets(5, 7, 0, seed=26)
    assert intersect({"a": a, "b": b}, SALT) == {"a": [], "b": []}
