"""The ceiling for the deployment benchmark: the same bytes through a raw gRPC stream (1 MiB
chunks of bytes, no protobuf, same mutual TLS). Server and client halves in one file."""

import sys
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

CHUNK = 1 << 20
IDENTITY = (lambda b: b, lambda b: b)


def serve(kit: str, nbytes: int) -> grpc.Server:
    from fedsilo.transport.allocator import keep_freed_memory
    from fedsilo.transport.grpc.tls import server_credentials

    keep_freed_memory()  # as fedsilo's server and institutions do
    blob = bytes(nbytes)

    def down(request, context):
        view = memoryview(blob)
        for i in range(0, nbytes, CHUNK):
            yield bytes(view[i:i + CHUNK])

    def up(request_iterator, context):
        total = sum(len(c) for c in request_iterator)
        return total.to_bytes(8, "little")

    handler = grpc.method_handlers_generic_handler("raw", {
        "Down": grpc.unary_stream_rpc_method_handler(down, *IDENTITY),
        "Up": grpc.stream_unary_rpc_method_handler(up, *IDENTITY)})
    server = grpc.server(ThreadPoolExecutor(16))
    server.add_generic_rpc_handlers((handler,))
    server.add_secure_port("127.0.0.1:0", server_credentials(kit))
    return server


def client(address: str, kit: str, nbytes: int, rounds: int) -> None:
    from fedsilo.transport.allocator import keep_freed_memory
    from fedsilo.transport.grpc.tls import client_credentials

    keep_freed_memory()
    channel = grpc.secure_channel(address, client_credentials(kit))
    down = channel.unary_stream("/raw/Down", *IDENTITY)
    up = channel.stream_unary("/raw/Up", *IDENTITY)
    payload = bytes(nbytes)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        received = sum(len(c) for c in down(b""))
        view = memoryview(payload)
        up(bytes(view[i:i + CHUNK]) for i in range(0, nbytes, CHUNK))
        times.append(time.perf_counter() - t)
        assert received == nbytes
    print(" ".join(f"{x:.4f}" for x in times))


if __name__ == "__main__":
    client(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
