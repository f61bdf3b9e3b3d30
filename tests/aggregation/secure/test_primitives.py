import itertools

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedsilo.aggregation.secure import crypto, shamir
from fedsilo.aggregation.secure.fixedpoint import FixedPoint
from fedsilo.errors import ConfigError, MalformedUpdate, ProtocolError, SecureAggregationAborted


def test_fixed_point_sum_equals_float_sum_to_precision():
    fp = FixedPoint(frac_bits=24, max_abs=1e4)
    rng = np.random.default_rng(0)
    xs = [rng.uniform(-1e4, 1e4, 1000) for _ in range(50)]
    total = np.zeros(1000, np.uint64)
    for x in xs:
        total += fp.encode(x)  # wraps mod 2^64
    np.testing.assert_allclose(fp.decode(total), np.sum(xs, axis=0), atol=50 * fp.precision)


def test_fixed_point_refuses_out_of_range_and_overflowing_configs():
    fp = FixedPoint(frac_bits=24, max_abs=100.0)
    with pytest.raises(MalformedUpdate, match="exceeds max_abs"):
        fp.encode(np.array([101.0]))
    with pytest.raises(MalformedUpdate, match="NaN"):
        fp.encode(np.array([np.nan]))
    fp.check_headroom(1000)
    with pytest.raises(ConfigError, match="overflow"):
        FixedPoint(frac_bits=40, max_abs=2.0**20).check_headroom(10)


def test_shamir_any_t_shares_recover_and_fewer_cannot():
    secret = bytes(range(32))
    shares = shamir.split(secret, 3, [1, 2, 3, 4, 5])
    for subset in itertools.combinations(shares, 3):
        assert shamir.combine(list(subset), 3) == secret
    with pytest.raises(SecureAggregationAborted, match="2 shares, need 3"):
        shamir.combine(shares[:2], 3)
    # two shares interpolated as if they were enough do not give the secret
    try:
        wrong = shamir.combine(shares[:2], 2)
    except SecureAggregationAborted:
        wrong = None
    assert wrong != secret


def test_key_agreement_is_symmetric_and_purpose_bound():
    a, a_pub = crypto.keypair()
    b, b_pub = crypto.keypair()
    assert crypto.agree(a, b_pub, b"mask") == crypto.agree(b, a_pub, b"mask")
    assert crypto.agree(a, b_pub, b"mask") != crypto.agree(a, b_pub, b"share")


def test_sealed_shares_detect_tampering_and_wrong_context():
    key = crypto.random_seed()
    sealed = crypto.seal(key, b"share", b"round 3 from a to b")
    assert crypto.open_sealed(key, sealed, b"round 3 from a to b") == b"share"
    with pytest.raises(ProtocolError, match="failed authentication"):
        crypto.open_sealed(key, sealed, b"round 4 from a to b")
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(ProtocolError, match="failed authentication"):
        crypto.open_sealed(key, flipped, b"round 3 from a to b")


def test_mask_is_aes_ctr_keystream():
    seed = crypto.random_seed()
    out = crypto.expand_mask(seed, np.empty(1000, np.uint64))
    ref = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor().update(bytes(8000))
    assert out.tobytes() == ref
    assert not np.array_equal(out, crypto.expand_mask(crypto.random_seed(),
                                                      np.empty(1000, np.uint64)))


@pytest.mark.parametrize("dtype", [np.uint64, np.uint32])
def test_add_masks_adds_the_expanded_streams_over_the_concatenation(dtype, monkeypatch):
    """add_masks, piece by piece across arrays (pieces smaller than an array, ending
    mid-block), equals adding and subtracting expand_mask's streams over the concatenation."""
    monkeypatch.setattr(crypto, "MASK_CHUNK", 72)  # 9 or 18 elements a piece: streams split
    rng = np.random.default_rng(0)
    targets = [rng.integers(0, np.iinfo(dtype).max, size=s, dtype=dtype, endpoint=True)
               for s in [(3,), (10, 7), (), (0,), (101,)]]
    targets.append(np.zeros((8, 6), dtype)[:, ::2])  # not contiguous: written back
    masks = [(crypto.random_seed(), sign) for sign in (1, -1, -1, 1)]
    expected = np.concatenate([t.reshape(-1) for t in targets])
    for seed, sign in masks:
        stream = crypto.expand_mask(seed, np.empty(expected.size, dtype))
        expected = expected + stream if sign > 0 else expected - stream
    crypto.add_masks(targets, masks)
    assert np.array_equal(np.concatenate([t.reshape(-1) for t in targets]), expected)
