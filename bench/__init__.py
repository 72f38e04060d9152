"""`parallax bench KIND`: the benchmarks, the scheduler simulator and its plots.

Not part of the product: `parallax/`, `node/` and `coordinator/` never import it
(an import-linter contract). Each benchmark is an entry point of the
`parallax.benchmarks` group, dispatched by `parallax/bench.py`.
"""
