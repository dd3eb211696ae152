"""Fuzzing of every input reader (test and benchmark tooling, kept out of the layered packages because it
drives readers of every layer: recon.io and renderers.gaussians.ply).

``run_fuzz`` mutates small valid inputs (benchmarks._fuzz.corpus) with seeded byte, text-number and JSON
mutations (benchmarks._fuzz.mutate) and runs each case in a worker process with a memory cap and a per-case
timeout (benchmarks._fuzz.worker). Used by tests/test_fuzz_readers.py and benchmarks/fuzz_readers.py.
"""

from benchmarks._fuzz.corpus import READERS
from benchmarks._fuzz.engine import BAD_OUTCOMES, FuzzReport, ReaderStats, format_table, run_fuzz

__all__ = ["BAD_OUTCOMES", "READERS", "FuzzReport", "ReaderStats", "format_table", "run_fuzz"]
