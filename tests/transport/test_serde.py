"""Arrays survive the wire format bit for bit; malformed messages are refused by name."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedsilo.core.messages import ErrorInfo, FitTask, Reply, StageTask, Task, TaskKind
from fedsilo.errors import MalformedUpdate
from fedsilo.transport import serde
from fedsilo.transport.grpc import fedsilo_pb2 as pb

DTYPES = st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.float16])
ARRAYS = st.dictionaries(
    st.text("abcdefghij._", min_size=1, max_size=8),
    DTYPES.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3,
                                                              min_side=0, max_side=7))),
    max_size=5)


@settings(max_examples=60, deadline=None)
@given(arrays=ARRAYS, chunk=st.integers(1, 64))
def test_roundtrip_is_bit_exact_for_any_chunking(arrays, chunk):
    frames = list(serde.encode("reply", {"x": 1}, arrays, chunk=chunk))
    kind, meta, got = serde.decode(frames)
    assert kind == "reply" and meta == {"x": 1} and list(got) == list(arrays)
    for name, a in arrays.items():
        assert got[name].dtype == a.dtype and got[name].shape == a.shape
        assert got[name].tobytes() == a.tobytes()


def test_big_endian_arrays_arrive_little_endian_with_same_values():
    a = np.arange(10, dtype=">f4")
    _, _, got = serde.decode(serde.encode("task", {}, {"a": a}))
    assert got["a"].dtype == np.dtype("<f4") and np.array_equal(got["a"], a)


def test_chunks_are_at_most_one_mib():
    frames = list(serde.encode("task", {}, {"w": np.zeros(3_000_000, np.float32)}))
    sizes = [len(serde.chunk_payload(f)) for f in frames[1:]]
    assert max(sizes) == serde.CHUNK and sum(sizes) == 12_000_000


def frames_with(**envelope):
    env = pb.Envelope(kind="reply", json="{}", **envelope)
    return [pb.Frame(envelope=env).SerializeToString()]


def chunk(data: bytes) -> bytes:
    return pb.Frame(chunk=data).SerializeToString()


def test_chunk_frames_are_exactly_protobuf_frames():
    for size in (0, 1, 127, 128, 300, 1 << 20):
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        ours = next(f for i, f in enumerate(serde.encode(
            "x", {}, {"a": np.frombuffer(data, np.uint8)}, chunk=1 << 21)) if i == 1) \
            if size else chunk(b"")
        assert pb.Frame.FromString(ours).chunk == data
        assert bytes(serde.chunk_payload(chunk(data))) == data


@pytest.mark.parametrize("frames, message", [
    ([], "does not start with an envelope"),
    ([chunk(b"abc")], "does not start with an envelope"),
    ([b"\xff\xff\xff"], "first frame is not a Frame"),
    (frames_with(arrays=[pb.ArraySpec(name="w", dtype="|O", shape=[2])], total_bytes=16),
     "dtype '|O' is not allowed"),
    (frames_with(arrays=[pb.ArraySpec(name="w", dtype="<f4", shape=[2])], total_bytes=8),
     "received 0 bytes, manifest says 8"),
    (frames_with(arrays=[pb.ArraySpec(name="w", dtype="<f4", shape=[2])], total_bytes=9),
     "hold 8 bytes, envelope says 9"),
    (frames_with(arrays=[pb.ArraySpec(name="w", dtype="<f4", shape=[-1])], total_bytes=0),
     "negative dimension"),
    (frames_with(arrays=[pb.ArraySpec(name="w", dtype="<f8", shape=[1 << 20, 1 << 20])],
                 total_bytes=8 << 40), "more than"),
    ([*frames_with(arrays=[pb.ArraySpec(name="w", dtype="<f4", shape=[1])], total_bytes=4),
      chunk(b"12345678")], "more bytes than the manifest"),
    ([*frames_with(arrays=[pb.ArraySpec(name="w", dtype="<f4", shape=[1])], total_bytes=4),
      b"\x12\x09abc"], "length does not match"),
    ([*frames_with(arrays=[pb.ArraySpec(name="w", dtype="<f4", shape=[1])], total_bytes=4),
      *frames_with()], "is not a chunk"),
    ([pb.Frame(envelope=pb.Envelope(kind="reply", json="{not json")).SerializeToString()],
     "not valid JSON"),
])
def test_malformed_messages_are_refused(frames, message):
    with pytest.raises(MalformedUpdate, match=message):
        serde.decode(frames)


def test_task_and_reply_metadata_roundtrip():
    task = Task("run", 3, 2, TaskKind.FIT, "va", {"w": np.ones(2, np.float32)},
                {"lr": 0.1}, {"mask": 1}, body=FitTask("scaffold", 7))
    _, meta, arrays = serde.decode(serde.encode("task", serde.task_meta(task), task.params))
    back = serde.task_from(meta, arrays)
    assert back.task_id == task.task_id and back.config == task.config
    assert back.body == FitTask("scaffold", 7)  # typed on both ends
    stage = Task("run", 3, 2, TaskKind.STAGE, "va", {}, body=StageTask("share", {"x": [1]}))
    _, meta, arrays = serde.decode(serde.encode("task", serde.task_meta(stage), {}))
    back = serde.task_from(meta, arrays)
    assert back.body == stage.body and back.task_id.endswith("/stage-share/va")
    with pytest.raises(MalformedUpdate, match="incomplete or wrong"):  # a stage with no name
        serde.task_from({**meta, "body": {"payload": {}}}, arrays)
    reply = Reply(task.task_id, "va", 3, 2, 17, None, {"loss": 0.5}, {},
                  ErrorInfo("client_training_error", "boom"))
    _, meta, arrays = serde.decode(serde.encode("reply", serde.reply_meta(reply), None))
    got = serde.reply_from(meta, arrays, client_id="va")
    assert got == reply


def test_reply_identity_comes_from_the_caller_not_the_message():
    reply = Reply("t", "cleveland", 1, 0, 5, {"w": np.ones(1, np.float32)})
    _, meta, arrays = serde.decode(serde.encode("reply", serde.reply_meta(reply),
                                                reply.update))
    assert serde.reply_from(meta, arrays, client_id="hungary").client_id == "hungary"
