"""Drive the fuzzer: mutate seeds, run each case in the worker process, classify, tally per reader.

Every case ends as one of: ``valid`` (the reader returned a sound result), ``input_error`` (a one-line
ReconInputError naming a file), ``exception`` (anything else, a multi-line error, or a result with NaN cameras),
``hang`` (no answer within the per-case timeout: the worker is killed and restarted) or ``crash`` (the worker
died: a signal or an abort in native code). Only the first two are acceptable. Case i of a reader uses the
random generator seeded with (seed, reader number, i), so any case can be rebuilt from the report.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._fuzz.corpus import READERS, Seed, Target, build_seeds
from benchmarks._fuzz.mutate import mutate

BAD_OUTCOMES = ("exception", "hang", "crash")
# Share of cases where a target is replaced by something that is not a regular file.
_FILE_KIND_RATE = 0.03


@dataclass
class CaseResult:
    reader: str
    index: int
    variant: str
    mutation: str
    outcome: str
    type: str = ""
    detail: str = ""
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    extra_mb: float = 0.0


@dataclass
class ReaderStats:
    reader: str
    cases: int = 0
    valid: int = 0
    input_error: int = 0
    exception: int = 0
    hang: int = 0
    crash: int = 0
    peak_rss_mb: float = 0.0
    max_extra_mb: float = 0.0
    seconds: float = 0.0
    failures: list[CaseResult] = field(default_factory=list)

    def add(self, r: CaseResult) -> None:
        self.cases += 1
        setattr(self, r.outcome, getattr(self, r.outcome) + 1)
        self.peak_rss_mb = max(self.peak_rss_mb, r.peak_rss_mb)
        self.max_extra_mb = max(self.max_extra_mb, r.extra_mb)
        if r.outcome in BAD_OUTCOMES:
            self.failures.append(r)


class Worker:
    """The worker subprocess (benchmarks._fuzz.worker), restarted after a hang or crash."""

    def __init__(self, mem_bytes: int, log_path: Path, start_timeout: float = 300.0) -> None:
        self.mem_bytes, self.log_path, self.start_timeout = mem_bytes, log_path, start_timeout
        self.proc: subprocess.Popen | None = None
        self.baseline_rss_mb = 0.0
        self._buf = b""

    def start(self) -> None:
        root = Path(__file__).resolve().parents[2]
        env = dict(
            os.environ,
            MALLOC_ARENA_MAX="2",
            OMP_NUM_THREADS="1",
            PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        )
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._fuzz.worker", str(self.mem_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            cwd=root,
        )
        self._buf = b""
        line = self._read_line(self.start_timeout)
        if line is None:
            self.stop()
            raise RuntimeError(f"fuzz worker did not start within {self.start_timeout} s (log: {self.log_path})")
        self.baseline_rss_mb = json.loads(line).get("baseline_rss_mb", 0.0)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()
            self._log.close()
            self.proc = None

    def _read_line(self, timeout: float) -> bytes | None:
        """One line from the worker, None on timeout; EOFError when it died."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise EOFError
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def run(self, call: str, path: str, timeout: float) -> dict[str, Any]:
        if self.proc is None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps({"call": call, "path": path}) + "\n").encode())
            self.proc.stdin.flush()
            line = self._read_line(timeout)
        except (EOFError, BrokenPipeError):
            self.proc.wait()
            code = self.proc.returncode
            self.stop()
            return {"outcome": "crash", "type": f"exit {code}", "detail": _tail(self.log_path)}
        if line is None:
            self.stop()
            return {"outcome": "hang", "type": "timeout", "detail": f"no answer within {timeout} s"}
        return json.loads(line)


def _tail(path: Path, n: int = 300) -> str:
    try:
        text = path.read_bytes()[-4000:].decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-3:])[-n:]


def _pick_targets(seed: Seed, rng: np.random.Generator) -> list[Target]:
    k = 1 if rng.random() < 0.75 or len(seed.targets) == 1 else 2
    w = np.array([t.weight for t in seed.targets], dtype=np.float64)
    idx = rng.choice(len(seed.targets), size=k, replace=False, p=w / w.sum())
    return [seed.targets[int(i)] for i in idx]


def _replace_kind(path: Path, rng: np.random.Generator) -> str:
    """Swap a file for something that is not one (each must end in an error naming it, never a hang)."""
    kind = str(rng.choice(["empty", "folder", "broken_link", "fifo", "dev_zero", "dev_null"]))
    path.unlink()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    elif kind == "broken_link":
        path.symlink_to(path.parent / "no-such-file")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero" if kind == "dev_zero" else "/dev/null")
    return f"{path.name} -> {kind}"


def make_case(folder: Path, seed: Seed, case_dir: Path, rng: np.random.Generator) -> str:
    """Copy the seed to ``case_dir`` (hard links) and mutate 1-2 of its targets; returns the description."""
    if case_dir.exists():
        shutil.rmtree(case_dir)
    shutil.copytree(folder, case_dir, copy_function=os.link, symlinks=True)
    notes = []
    for target in _pick_targets(seed, rng):
        path = case_dir / target.path
        if rng.random() < _FILE_KIND_RATE:
            notes.append(_replace_kind(path, rng))
            continue
        data, note = mutate(path.read_bytes(), target.kind, rng, rounds=2 if rng.random() < 0.3 else 1)
        tmp = path.with_name(path.name + ".fuzz-tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # a new inode: the seed behind the hard link stays intact
        notes.append(f"{target.path}: {note}")
    return "; ".join(notes)


@dataclass
class FuzzReport:
    stats: list[ReaderStats]
    settings: dict[str, Any]

    def failures(self) -> list[CaseResult]:
        return [f for s in self.stats for f in s.failures]

    def to_json(self, max_failures: int = 50) -> dict[str, Any]:
        readers = []
        for s in self.stats:
            d = asdict(s)
            d["failures"] = [asdict(f) for f in s.failures[:max_failures]]
            readers.append(d)
        return {"settings": self.settings, "readers": readers}


def _fuzz_reader(
    reader: str,
    worker: Worker,
    work: Path,
    cases: int,
    seed: int,
    timeout_s: float,
    keep_failures: Path | None,
    progress: Callable[[str, int, CaseResult], None] | None,
) -> ReaderStats:
    """``cases`` mutated inputs for one reader, after checking that its unmutated seeds read as valid."""
    rid = READERS.index(reader)
    seed_root = work / "seeds" / reader
    if seed_root.exists():
        shutil.rmtree(seed_root)
    seeds = build_seeds(reader, seed_root)
    for folder, s in seeds:
        check = worker.run(s.call, str(folder / s.entry), max(timeout_s, 60.0))
        if check["outcome"] != "valid":
            raise RuntimeError(f"fuzz seed {reader}/{s.variant} is not read as valid: {check}")
    st = ReaderStats(reader)
    t0 = time.perf_counter()
    case_dir = work / "case"
    for i in range(cases):
        rng = np.random.default_rng([seed, rid, i])
        folder, s = seeds[i % len(seeds)]
        note = make_case(folder, s, case_dir, rng)
        out = worker.run(s.call, str(case_dir / s.entry), timeout_s)
        r = CaseResult(
            reader=reader,
            index=i,
            variant=s.variant,
            mutation=note[:300],
            outcome=out["outcome"],
            type=out.get("type", ""),
            detail=out.get("detail", ""),
            seconds=out.get("seconds", timeout_s),
            peak_rss_mb=out.get("peak_rss_mb", 0.0),
            extra_mb=out.get("extra_mb", 0.0),
        )
        st.add(r)
        if r.outcome in BAD_OUTCOMES and keep_failures is not None:
            _keep(case_dir, Path(keep_failures) / f"{reader}-{i:05d}")
        if progress is not None:
            progress(reader, i, r)
    st.seconds = round(time.perf_counter() - t0, 1)
    return st


def _keep(case_dir: Path, dest: Path) -> None:
    """A copy of a failed case's input (FIFOs and devices left out)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(
        case_dir,
        dest,
        symlinks=True,
        ignore_dangling_symlinks=True,
        ignore=lambda d, names: [n for n in names if _is_special(Path(d) / n)],
    )


def run_fuzz(
    readers: tuple[str, ...] | list[str] = READERS,
    cases: int = 100,
    seed: int = 0,
    timeout_s: float = 10.0,
    mem_bytes: int = 2 * 1024**3,
    workdir: Path | None = None,
    keep_failures: Path | None = None,
    progress: Callable[[str, int, CaseResult], None] | None = None,
) -> FuzzReport:
    """Fuzz ``readers`` with ``cases`` mutated inputs each; see the module docstring for the outcomes.

    ``mem_bytes`` caps what the worker may allocate beyond its imports. ``keep_failures`` copies the input of
    every bad case there. Raises RuntimeError when an unmutated seed is not read as valid (a corpus bug).
    """
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="recon-fuzz-")) if own else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    worker = Worker(mem_bytes, work / "worker.log")
    t_start = time.perf_counter()
    try:
        stats = [_fuzz_reader(r, worker, work, cases, seed, timeout_s, keep_failures, progress) for r in readers]
    finally:
        worker.stop()
        if own:
            shutil.rmtree(work, ignore_errors=True)
    settings = {
        "cases_per_reader": cases,
        "seed": seed,
        "timeout_s": timeout_s,
        "mem_cap_mb_beyond_imports": mem_bytes // 2**20,
        "baseline_rss_mb": worker.baseline_rss_mb,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    return FuzzReport(stats, settings)


def _is_special(path: Path) -> bool:
    return path.is_fifo() or path.is_char_device() or path.is_block_device()


def format_table(stats: list[ReaderStats]) -> str:
    """Fixed-width table: reader, cases, valid, one-line errors, other exceptions, hangs, crashes, memory."""
    head = (
        f"{'reader':<14} {'cases':>6} {'valid':>6} {'1-line err':>10} {'other exc':>9} {'hangs':>6} "
        f"{'crashes':>7} {'peak RSS MB':>11} {'max extra MB':>12} {'seconds':>8}"
    )
    rows = [head, "-" * len(head)]
    for s in stats:
        rows.append(
            f"{s.reader:<14} {s.cases:>6} {s.valid:>6} {s.input_error:>10} {s.exception:>9} {s.hang:>6} "
            f"{s.crash:>7} {s.peak_rss_mb:>11.0f} {s.max_extra_mb:>12.0f} {s.seconds:>8.1f}"
        )
    return "\n".join(rows)
