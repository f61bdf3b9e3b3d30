"""Task and Reply to and from wire messages: a JSON envelope plus raw array bytes in chunks.

Every message is a stream of serialized `Frame`s (fedsilo.proto): one Envelope, then chunks.
Arrays travel as their little-endian bytes (no pickling, no per-element encoding). Chunk
frames are written and read directly in protobuf's wire format (tag 0x12, varint length,
bytes) so that a chunk is copied once on each side: into the frame when sent, and from the
received frame into the preallocated array. Envelopes go through protobuf. A manifest that
disagrees with the bytes received, an unknown dtype or an absurd shape is a MalformedUpdate.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict
from typing import Any

import numpy as np

from fedsilo.core.messages import ErrorInfo, Reply, Task, TaskKind
from fedsilo.core.params import Params
from fedsilo.errors import MalformedUpdate
from fedsilo.transport.grpc import fedsilo_pb2 as pb

CHUNK = 1 << 20
ALLOWED_DTYPES = {np.dtype(t).newbyteorder("<").str for t in
                  ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "?")}
MAX_BYTES = 1 << 36  # 64 GiB: far above any model we move, far below a hostile manifest


def _le(a: np.ndarray) -> np.ndarray:
    a = a if a.flags.c_contiguous else a.copy(order="C")  # keeps 0-d arrays 0-d
    return a if a.dtype.byteorder in "<|=" else a.astype(a.dtype.newbyteorder("<"))


CHUNK_TAG = 0x12  # field 2 (chunk), wire type 2 (length-delimited)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def chunk_payload(frame: bytes) -> memoryview | None:
    """The bytes of a serialized chunk Frame, without copying; None if it is not one."""
    if not frame or frame[0] != CHUNK_TAG:
        return None
    length, shift, pos = 0, 0, 1
    while pos < len(frame) and pos < 11:
        byte = frame[pos]
        length |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            break
    if pos + length != len(frame):
        raise MalformedUpdate("chunk frame length does not match its payload")
    return memoryview(frame)[pos:]


def encode(kind: str, meta: Mapping[str, Any], arrays: Params | None,
           chunk: int = CHUNK) -> Iterator[bytes]:
    """Serialized frames of one message: an Envelope, then each array's bytes in chunks."""
    arrays = {n: _le(a) for n, a in (arrays or {}).items()}
    specs = [pb.ArraySpec(name=n, dtype=a.dtype.str, shape=list(a.shape))
             for n, a in arrays.items()]
    total = sum(a.nbytes for a in arrays.values())
    yield pb.Frame(envelope=pb.Envelope(kind=kind, json=json.dumps(meta), arrays=specs,
                                        total_bytes=total)).SerializeToString()
    tag = bytes([CHUNK_TAG])
    for a in arrays.values():
        view = a.reshape(-1).view(np.uint8).data
        for start in range(0, len(view), chunk):
            part = view[start:start + chunk]
            yield b"".join((tag, _varint(len(part)), part))


def decode(frames: Iterable[bytes]) -> tuple[str, dict[str, Any], Params]:
    """(kind, metadata, arrays) from the serialized frames of one message.

    Raises:
        MalformedUpdate: missing envelope, bad JSON, disallowed dtype, or byte count that does
            not match the manifest.
    """
    it = iter(frames)
    first = next(it, None)
    try:
        head = pb.Frame.FromString(first) if first is not None else None
    except Exception as e:  # protobuf's DecodeError
        raise MalformedUpdate(f"first frame is not a Frame: {e}") from None
    if head is None or head.WhichOneof("body") != "envelope":
        raise MalformedUpdate("message does not start with an envelope")
    env = head.envelope
    try:
        meta = json.loads(env.json or "{}")
    except json.JSONDecodeError as e:
        raise MalformedUpdate(f"envelope metadata is not valid JSON: {e}") from None
    arrays, views = _allocate(env)
    filled, index, offset = 0, 0, 0
    for frame in it:
        payload = chunk_payload(frame)
        if payload is None:
            raise MalformedUpdate("a frame after the envelope is not a chunk")
        data = np.frombuffer(payload, dtype=np.uint8)
        while data.size:
            if index >= len(views):
                raise MalformedUpdate(f"more bytes than the manifest's {env.total_bytes}")
            target = views[index]
            n = min(data.size, target.size - offset)
            target[offset:offset + n] = data[:n]
            data, offset, filled = data[n:], offset + n, filled + n
            if offset == target.size:
                index, offset = index + 1, 0
    if filled != env.total_bytes:
        raise MalformedUpdate(f"received {filled} bytes, manifest says {env.total_bytes}")
    return env.kind, meta, arrays


def _allocate(env: Any) -> tuple[Params, list[np.ndarray]]:
    arrays: Params = {}
    total = 0
    for spec in env.arrays:
        if spec.dtype not in ALLOWED_DTYPES:
            raise MalformedUpdate(f"array '{spec.name}': dtype '{spec.dtype}' is not allowed")
        if any(d < 0 for d in spec.shape):
            raise MalformedUpdate(f"array '{spec.name}': negative dimension in {list(spec.shape)}")
        if spec.name in arrays:
            raise MalformedUpdate(f"array '{spec.name}' appears twice in the manifest")
        dtype = np.dtype(spec.dtype)
        size = int(np.prod(spec.shape, dtype=np.int64)) * dtype.itemsize
        total += size
        if total > MAX_BYTES:
            raise MalformedUpdate(f"manifest announces more than {MAX_BYTES} bytes")
        arrays[spec.name] = np.empty(tuple(spec.shape), dtype=dtype)
    if total != env.total_bytes:
        raise MalformedUpdate(f"manifest arrays hold {total} bytes, envelope says "
                              f"{env.total_bytes}")
    return arrays, [a.reshape(-1).view(np.uint8) for a in arrays.values() if a.size]


def task_meta(task: Task) -> dict[str, Any]:
    return {"run_id": task.run_id, "round": task.round, "model_version": task.model_version,
            "kind": task.kind.value, "client_id": task.client_id, "config": dict(task.config),
            "layer_config": dict(task.layer_config)}


def task_from(meta: Mapping[str, Any], arrays: Params) -> Task:
    try:
        return Task(str(meta["run_id"]), int(meta["round"]), int(meta["model_version"]),
                    TaskKind(meta["kind"]), str(meta["client_id"]), arrays,
                    dict(meta.get("config", {})), dict(meta.get("layer_config", {})))
    except (KeyError, ValueError, TypeError) as e:
        raise MalformedUpdate(f"task metadata is incomplete or wrong: {e!r}") from None


def reply_meta(reply: Reply) -> dict[str, Any]:
    return {"task_id": reply.task_id, "client_id": reply.client_id, "round": reply.round,
            "model_version": reply.model_version, "num_examples": reply.num_examples,
            "metrics": dict(reply.metrics), "payload": dict(reply.payload),
            "error": asdict(reply.error) if reply.error else None,
            "has_update": reply.update is not None}


def reply_from(meta: Mapping[str, Any], arrays: Params, client_id: str) -> Reply:
    """A Reply whose `client_id` is the authenticated identity, whatever the metadata says."""
    try:
        error = ErrorInfo(**meta["error"]) if meta.get("error") else None
        metrics = {str(k): float(v) for k, v in dict(meta.get("metrics", {})).items()}
        return Reply(str(meta["task_id"]), client_id, int(meta["round"]),
                     int(meta["model_version"]), int(meta["num_examples"]),
                     arrays if meta.get("has_update") else None, metrics,
                     dict(meta.get("payload", {})), error)
    except (KeyError, ValueError, TypeError) as e:
        raise MalformedUpdate(f"reply metadata is incomplete or wrong: {e!r}") from None
