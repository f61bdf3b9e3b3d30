"""Deployment transport: gRPC with mutual TLS. Generated code (fedsilo_pb2*) is built from
fedsilo.proto by the package's install (setup.py), never committed."""
