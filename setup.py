"""Generates the gRPC code from the .proto at install time (never committed by hand)."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PROTO = Path("src/fedsilo/transport/grpc/fedsilo.proto")


class BuildWithProtos(build_py):
    def run(self) -> None:
        from grpc_tools import protoc

        include = Path(protoc.__file__).parent / "_proto"
        args = ["protoc", "-Isrc", f"-I{include}", "--python_out=src", "--pyi_out=src",
                "--grpc_python_out=src", str(PROTO.relative_to("src"))]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {PROTO}")
        super().run()


setup(cmdclass={"build_py": BuildWithProtos})
