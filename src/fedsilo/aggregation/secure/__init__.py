"""Secure aggregation: the server learns only the sum (SecAgg / SecAgg+)."""
