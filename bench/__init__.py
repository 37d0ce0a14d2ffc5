"""op-sentinel's benchmark suite (issue 6): `python -m bench [backfill|pipeline|memory|sentinel] [--quick]`.

Everything runs against local things only: the project's Events API simulator (in-process or in a
child process), DuckDB files in a temporary directory, and the local Azure fakes of `tests/fakes`
(run in a child process). Figures are printed as plain-text tables; `bench/README.md` explains them.
Benchmarks are never part of `make test` (only `tests/unit/test_bench_smoke.py` runs them, tiny).
"""
