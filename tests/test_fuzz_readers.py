"""Fuzzing every input reader (benchmarks._fuzz): a small seeded run per reader must give only valid results or
one-line ReconInputErrors, and the harness itself must see hangs, crashes and memory blow-ups.

benchmarks/fuzz_readers.py runs the same engine with 2,000 cases per reader.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the engine lives with the benchmarks, outside the layered packages

from benchmarks._fuzz import READERS, format_table, run_fuzz  # noqa: E402
from benchmarks._fuzz.corpus import build_seeds  # noqa: E402
from benchmarks._fuzz.engine import Worker, make_case  # noqa: E402
from benchmarks._fuzz.mutate import BY_KIND, fix_png_crcs, mutate  # noqa: E402

CASES_PER_READER = 60


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz")
    return run_fuzz(
        READERS, cases=CASES_PER_READER, seed=7, timeout_s=30.0, workdir=work, keep_failures=work / "failures"
    )


def test_every_reader_ends_in_a_result_or_a_one_line_error(report):
    assert [s.reader for s in report.stats] == list(READERS)
    failures = [f"{f.reader} #{f.index} {f.outcome} {f.type}: {f.detail} <- {f.mutation}" for f in report.failures()]
    assert not failures, "\n".join([format_table(report.stats), *failures])
    for s in report.stats:
        assert s.cases == CASES_PER_READER == s.valid + s.input_error
        assert s.input_error > 0  # the mutations do reach the readers' checks
        assert s.max_extra_mb < 2048


def test_mutations_are_seeded_and_varied():
    data = json.dumps({"frames": [{"file_path": "a.png", "transform_matrix": [[1, 0], [0, 1]]}], "fl_x": 30.5}).encode()
    for kind in BY_KIND:
        a = [mutate(data, kind, np.random.default_rng([1, i])) for i in range(30)]
        b = [mutate(data, kind, np.random.default_rng([1, i])) for i in range(30)]
        assert a == b
        assert len({out for out, _ in a}) > 10, kind


def test_png_crcs_are_fixed_after_a_mutation(tmp_path):
    import zlib

    import cv2

    ok, buf = cv2.imencode(".png", np.zeros((4, 5, 3), np.uint8))
    data = bytearray(buf.tobytes())
    data[19] = 9  # width 5 -> 9, now the IHDR checksum is wrong
    fixed = fix_png_crcs(bytes(data))
    assert fixed[:29] == bytes(data[:29])
    assert int.from_bytes(fixed[29:33], "big") == zlib.crc32(fixed[12:29])


def test_cases_leave_the_seeds_untouched(tmp_path):
    (folder, seed), *_ = build_seeds("transforms", tmp_path / "seeds")
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    for i in range(20):
        make_case(folder, seed, tmp_path / "case", np.random.default_rng(i))
    assert before == {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_harness_sees_hangs_crashes_and_memory_blowups(tmp_path):
    worker = Worker(mem_bytes=1024**3, log_path=tmp_path / "worker.log")
    try:
        assert worker.run("selftest", "memory", 60.0)["type"] == "MemoryError"
        assert worker.run("selftest", "hang", 2.0)["outcome"] == "hang"
        assert worker.run("selftest", "crash", 60.0)["outcome"] == "crash"
        assert worker.run("selftest", "fine", 60.0)["outcome"] == "valid"  # restarted after each
    finally:
        worker.stop()
