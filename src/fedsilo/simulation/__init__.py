"""Many institutions on one machine: the same strategy and client code, in-process transport."""
