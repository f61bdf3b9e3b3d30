"""Core contracts: parameters, messages, seeded randomness, the Trainer and ServerTransport
protocols, the names of side values."""
