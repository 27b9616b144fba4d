"""The benchmarks: each prints its figures and saves them under bench/results/.

Run them as modules from the repository root, ``python -m bench.serving``
(``make bench`` runs them all), so that the package, ``devtools`` and
``bench.common``, the one module they share, import without path edits.
"""
