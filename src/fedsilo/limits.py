"""The sizes fedsilo accepts, checked before any work starts (stated in docs/)."""

# in one run: simulated in process or on Ray, or deployed (a deployment's server sizes its
# thread pool by its institutions, transport/grpc/server.py)
MAX_INSTITUTIONS = 10_000
MAX_COLUMNS = 10_000          # columns of one institution's table
MAX_LINE_BYTES = 16 << 20     # bytes of a table's first line (the header)
MAX_LEVELS = 100              # default data.max_levels: levels of a categorical column
