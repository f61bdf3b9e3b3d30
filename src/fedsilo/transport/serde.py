"""Task and Reply to and from wire messages: a JSON envelope plus raw array bytes in chunks.

Every message is a stream of serialized `Frame`s (fedsilo.proto): one Envelope, then chunks.
Arrays travel as their little-endian bytes (no pickling, no per-element encoding). Chunk
frames are written and read directly in protobuf's wire format (tag 0x12, varint length,
bytes) so that a chunk is copied once on each side: into the frame when sent, and from the
received frame into the preallocated array. Envelopes go through protobuf. A manifest that
disagrees with the bytes received, an unknown dtype or an absurd shape is a MalformedUpdate;
so is one that is not what the task it answers expects (`expect`, checked on the envelope,
before anything is allocated or another frame is read).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict
from typing import Any

import numpy as np

from fedsilo.core.messages import BODIES, ErrorInfo, Reply, ReplySpec, Task, TaskKind
from fedsilo.core.params import Params, shape_fits
from fedsilo.errors import MalformedUpdate, ProtocolError
from fedsilo.transport.grpc import fedsilo_pb2 as pb

CHUNK = 1 << 20
ALLOWED_DTYPES = {np.dtype(t).newbyteorder("<").str for t in
                  ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "?")}
MAX_BYTES = 1 << 36  # 64 GiB: far above any model we move, far below a hostile manifest
MAX_DIMS = 32        # numpy's limit
FIT_FALLBACK = (4, 64 << 20)  # a fit task that states no ReplySpec: 4 x its model + 64 MiB
Expect = Callable[[str, Mapping[str, Any]], ReplySpec]  # (kind, metadata) -> what may come


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


def decode(frames: Iterable[bytes], expect: Expect | None = None,
           ) -> tuple[str, dict[str, Any], Params]:
    """(kind, metadata, arrays) from the serialized frames of one message. With `expect`,
    the manifest must be what `expect(kind, metadata)` allows (see `check_manifest`) before
    any array is allocated; `expect` may itself refuse (a reply to no open task).

    Raises:
        MalformedUpdate: missing envelope, bad JSON, disallowed dtype, a manifest the task does
            not expect, or a byte count that does not match the manifest.
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
    if not isinstance(meta, dict):
        raise MalformedUpdate("envelope metadata is not a JSON object")
    if expect is not None:
        check_manifest(env, expect(env.kind, meta))
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


def _nbytes(spec: Any) -> int:
    """Bytes of one manifest entry, in Python integers (no int64 overflow: a shape like
    [2**62, 4] is 2**66 bytes, not 0)."""
    if spec.dtype not in ALLOWED_DTYPES:
        raise MalformedUpdate(f"array '{shown(spec.name)}': dtype '{shown(spec.dtype)}' is "
                              f"not allowed")
    if len(spec.shape) > MAX_DIMS:
        raise MalformedUpdate(f"array '{shown(spec.name)}': more than {MAX_DIMS} dimensions")
    if any(d < 0 for d in spec.shape):
        raise MalformedUpdate(f"array '{shown(spec.name)}': negative dimension in "
                              f"{list(spec.shape)}")
    return math.prod(int(d) for d in spec.shape) * np.dtype(spec.dtype).itemsize


def shown(name: str) -> str:
    """A manifest name for a message: it comes from the peer, so it is cut short."""
    return name if len(name) <= 64 else f"{name[:64]}..."


def check_manifest(env: Any, allowed: ReplySpec) -> None:
    """The envelope's arrays are none (an error reply) or exactly those `allowed` names, with
    its dtypes and shapes (-1: any length), and all together at most `allowed.max_bytes`.

    Raises:
        MalformedUpdate: naming the first difference (never a value).
    """
    sizes = [_nbytes(spec) for spec in env.arrays]
    names = [spec.name for spec in env.arrays]
    if len(set(names)) != len(names):
        raise MalformedUpdate("reply manifest names an array twice")
    if allowed.arrays is not None and names:
        missing = [n for n in allowed.arrays if n not in names]
        extra = sum(n not in allowed.arrays for n in names)
        if missing or extra:
            raise MalformedUpdate(f"reply manifest differs from what the task expects: "
                                  f"missing {missing[:8]}, {extra} unexpected array(s)")
        for spec in env.arrays:
            want = allowed.arrays[spec.name]
            shape = tuple(int(d) for d in spec.shape)
            if np.dtype(spec.dtype) != want.dtype:
                raise MalformedUpdate(f"reply manifest: '{spec.name}' is not {want.dtype} as "
                                      f"the task expects")
            if not shape_fits(tuple(shape), want.shape):
                raise MalformedUpdate(f"reply manifest: '{spec.name}' has shape "
                                      f"{list(shape) if len(shape) <= 8 else '(too many)'}, "
                                      f"the task expects {list(want.shape)}")
    if sum(sizes) > allowed.max_bytes:
        raise MalformedUpdate(f"reply manifest announces {sum(sizes)} bytes, more than the "
                              f"{allowed.max_bytes} its task allows")


def reply_allowance(task: Task) -> ReplySpec:
    """What a reply to `task` may carry: the ReplySpec its strategy attached; else no arrays
    (only fit replies carry any), and for a fit task without one, up to 4 times the bytes of
    its model plus 64 MiB, under any names."""
    if task.expects is not None:
        return task.expects
    if task.kind is not TaskKind.FIT:
        return ReplySpec({}, 0)
    factor, extra = FIT_FALLBACK
    return ReplySpec(None, factor * sum(a.nbytes for a in task.params.values()) + extra)


def _allocate(env: Any) -> tuple[Params, list[np.ndarray]]:
    arrays: Params = {}
    total = 0
    for spec in env.arrays:
        size = _nbytes(spec)
        if spec.name in arrays:
            raise MalformedUpdate(f"array '{shown(spec.name)}' appears twice in the manifest")
        total += size
        if total > MAX_BYTES:
            raise MalformedUpdate(f"manifest announces more than {MAX_BYTES} bytes")
    if total != env.total_bytes:
        raise MalformedUpdate(f"manifest arrays hold {total} bytes, envelope says "
                              f"{env.total_bytes}")
    for spec in env.arrays:
        arrays[spec.name] = np.empty(tuple(spec.shape), dtype=np.dtype(spec.dtype))
    return arrays, [a.reshape(-1).view(np.uint8) for a in arrays.values() if a.size]


def task_meta(task: Task) -> dict[str, Any]:
    return {"run_id": task.run_id, "round": task.round, "model_version": task.model_version,
            "kind": task.kind.value, "client_id": task.client_id, "config": dict(task.config),
            "layer_config": dict(task.layer_config),
            "body": asdict(task.body) if task.body is not None else None,
            "setup": dict(task.setup)}


def task_from(meta: Mapping[str, Any], arrays: Params) -> Task:
    try:
        kind = TaskKind(meta["kind"])
        body_type = BODIES.get(kind)
        body = body_type(**dict(meta["body"])) if body_type is not None else None
        return Task(str(meta["run_id"]), int(meta["round"]), int(meta["model_version"]),
                    kind, str(meta["client_id"]), arrays,
                    dict(meta.get("config", {})), dict(meta.get("layer_config", {})),
                    body=body, setup=dict(meta.get("setup") or {}))
    except (KeyError, ValueError, TypeError, OverflowError, ProtocolError) as e:
        raise MalformedUpdate(f"task metadata is incomplete or wrong: {e!r}") from None


def reply_meta(reply: Reply) -> dict[str, Any]:
    return {"task_id": reply.task_id, "client_id": reply.client_id, "round": reply.round,
            "model_version": reply.model_version, "num_examples": reply.num_examples,
            "metrics": dict(reply.metrics), "payload": dict(reply.payload),
            "error": asdict(reply.error) if reply.error else None,
            "has_update": reply.update is not None}


def reply_from(meta: Mapping[str, Any], arrays: Params, client_id: str) -> Reply:
    """A Reply whose `client_id` is the authenticated identity, whatever the metadata says.
    Its metrics and example count are checked later, against the task (algorithms/admission);
    an error it carries is kept to a known code's form and a bounded reason."""
    try:
        error = _error_from(meta["error"]) if meta.get("error") else None
        metrics = {str(k): float(v) for k, v in dict(meta.get("metrics", {})).items()}
        return Reply(str(meta["task_id"]), client_id, int(meta["round"]),
                     int(meta["model_version"]), int(meta["num_examples"]),
                     arrays if meta.get("has_update") else None, metrics,
                     dict(meta.get("payload", {})), error)
    except (KeyError, ValueError, TypeError, OverflowError) as e:
        what = f"missing {e}" if isinstance(e, KeyError) else type(e).__name__
        raise MalformedUpdate(f"reply metadata is incomplete or wrong ({what})") from None


MAX_REASON = 2000  # characters of an institution's error reason kept


def _error_from(raw: Mapping[str, Any]) -> ErrorInfo:
    code, reason = str(raw["code"]), str(raw["reason"])
    if not (code.isidentifier() and code.isascii() and len(code) <= 40):
        code = "client_error"
    return ErrorInfo(code, reason if len(reason) <= MAX_REASON else reason[:MAX_REASON] + "...")
