"""Core contracts: parameters, messages, seeded randomness."""
