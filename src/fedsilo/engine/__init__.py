"""The round loop, events, clocks. No I/O beyond the transport handed in."""
