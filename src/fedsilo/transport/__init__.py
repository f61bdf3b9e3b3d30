"""How tasks reach institutions: in-process for simulation (gRPC arrives with deployment)."""
