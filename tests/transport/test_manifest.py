"""A reply's manifest is checked against what its task expects before anything is allocated or
another frame is read (transport/serde.py `decode(..., expect)`), and hostile metadata is a
MalformedUpdate, never another exception."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fedsilo.core.messages import Reply, ReplySpec, Task, TaskKind
from fedsilo.core.params import ArraySpec
from fedsilo.errors import MalformedUpdate
from fedsilo.transport import serde
from fedsilo.transport.grpc import fedsilo_pb2 as pb

F4 = np.dtype(np.float32)
EXPECTS = ReplySpec({"w": ArraySpec((13, 1), F4), "b": ArraySpec((1,), F4)}, 56)


def envelope(arrays, total):
    return pb.Frame(envelope=pb.Envelope(kind="reply", json=json.dumps({"task_id": "t"}),
                                         arrays=arrays, total_bytes=total)).SerializeToString()


class Frames:
    """An envelope, then (lazily) as many 1 MiB chunks as wanted; counts what was read."""

    def __init__(self, arrays, total, chunks=0):
        self.head, self.chunks, self.read = envelope(arrays, total), chunks, 0

    def __iter__(self):
        self.read += 1
        yield self.head
        chunk = bytes([serde.CHUNK_TAG]) + serde._varint(serde.CHUNK) + bytes(serde.CHUNK)
        for _ in range(self.chunks):
            self.read += 1
            yield chunk


def spec(name, shape, dtype="<f4"):
    return pb.ArraySpec(name=name, dtype=dtype, shape=shape)


@pytest.mark.parametrize("arrays, total, words", [
    ([spec("w", [2**62, 4]), spec("b", [1])], 4, "'w' has shape [4611686018427387904, 4],"
                                                         " the task expects [13, 1]"),
    ([spec("w", [13, 1]), spec("b", [2**30])], 52 + 2**32, "'b' has shape"),
    ([spec("w", [13, 1]), spec("b", [1]), spec("x" * 500, [1])], 60, "1 unexpected array"),
    ([spec("w", [13, 1])], 52, "missing ['b']"),
    ([spec("w", [13, 1], "<f8"), spec("b", [1])], 108, "'w' is not float32"),
    ([spec("w", [13, 1]), spec("b", [1]), spec("w", [13, 1])], 108, "names an array twice"),
    ([spec("w", [1] * 40), spec("b", [1])], 8, "more than 32 dimensions"),
])
def test_a_manifest_the_task_does_not_expect_is_refused_after_the_envelope_only(
        arrays, total, words):
    frames = Frames(arrays, total, chunks=1024)  # 1 GiB would follow
    with pytest.raises(MalformedUpdate) as e:
        serde.decode(frames, lambda kind, meta: EXPECTS)
    assert words in str(e.value)
    assert frames.read == 1  # nothing after the envelope was read, nothing was allocated


def test_four_gib_announced_for_a_ciphertext_of_any_length_is_refused_by_its_byte_cap():
    ciphertext = ReplySpec({"w": ArraySpec((-1,), np.dtype(np.uint8))}, 1 << 20)
    frames = Frames([spec("w", [4 << 30], "|u1")], 4 << 30, chunks=1024)
    with pytest.raises(MalformedUpdate, match=f"more than the {1 << 20} its task allows"):
        serde.decode(frames, lambda kind, meta: ciphertext)
    assert frames.read == 1


def test_the_expected_reply_and_an_error_reply_without_arrays_pass():
    update = {"w": np.ones((13, 1), np.float32), "b": np.zeros(1, np.float32)}
    reply = Reply("t", "a", 1, 0, 5, update)
    _, _, arrays = serde.decode(serde.encode("reply", serde.reply_meta(reply), update),
                                lambda kind, meta: EXPECTS)
    assert np.array_equal(arrays["w"], update["w"])
    serde.decode(serde.encode("reply", {"task_id": "t"}, None), lambda kind, meta: EXPECTS)


def test_without_an_expectation_an_overflowing_shape_is_still_refused_not_allocated():
    with pytest.raises(MalformedUpdate, match="more than"):
        serde.decode(Frames([spec("w", [2**62, 4])], 0))  # 2**66 bytes, int64 gives 0


def test_what_a_task_may_be_answered_with():
    params = {"w": np.zeros(1000, np.float32)}
    fit = Task("r", 1, 0, TaskKind.FIT, "a", params)
    assert serde.reply_allowance(fit) == ReplySpec(None, 4 * 4000 + (64 << 20))
    assert serde.reply_allowance(Task("r", 1, 0, TaskKind.EVALUATE, "a", params)) == \
        ReplySpec({}, 0)
    assert serde.reply_allowance(Task("r", 1, 0, TaskKind.FIT, "a", params,
                                     expects=EXPECTS)) is EXPECTS


@pytest.mark.parametrize("change", [{"num_examples": math.inf}, {"num_examples": "many"},
                                    {"metrics": ["accuracy"]}, {"round": None}])
def test_hostile_reply_metadata_is_a_malformed_update(change):
    meta = {**serde.reply_meta(Reply("t", "a", 1, 0, 5)), **change}
    with pytest.raises(MalformedUpdate, match="reply metadata is incomplete or wrong"):
        serde.reply_from(meta, {}, "a")


def test_an_error_a_reply_carries_is_kept_to_a_code_and_a_bounded_reason():
    meta = {**serde.reply_meta(Reply("t", "a", 1, 0, 0)),
            "error": {"code": "drop table; --", "reason": "x" * 10_000}}
    error = serde.reply_from(meta, {}, "a").error
    assert error is not None and error.code == "client_error"
    assert len(error.reason) <= serde.MAX_REASON + 3
