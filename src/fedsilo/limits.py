"""The sizes fedsilo accepts, checked before any work starts (stated in docs/)."""

MAX_INSTITUTIONS = 1_000      # in one run (simulated in one process, or deployed)
MAX_COLUMNS = 10_000          # columns of one institution's table
MAX_LINE_BYTES = 16 << 20     # bytes of a table's first line (the header)
MAX_LEVELS = 100              # default data.max_levels: levels of a categorical column
