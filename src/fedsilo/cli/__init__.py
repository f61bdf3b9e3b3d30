"""The `fedsilo` command line."""
