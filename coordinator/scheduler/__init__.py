"""The pure two-phase scheduler: plain data in, plain data out; no I/O, no torch."""
