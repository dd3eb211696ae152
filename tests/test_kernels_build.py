"""Kernel build cache: the key separates interpreters and torch installs; builds land atomically."""

from __future__ import annotations

import sys
import threading
import types
from pathlib import Path

import pytest
import torch

from recon.kernels import build

SOURCES = [build.CSRC / "rasterize.cpp"]


def test_key_is_stable_and_covers_sources_and_flags():
    parts = build.key_parts(SOURCES, ["-O2"])
    assert build.cache_key(parts) == build.cache_key(build.key_parts(SOURCES, ["-O2"]))
    assert build.cache_key(parts) != build.cache_key(build.key_parts(SOURCES, ["-O1"]))
    assert build.cache_key(parts) != build.cache_key(build.key_parts(SOURCES[:0] + [build.CSRC / "sparse_linear.cpp"]))
    # the headers a source includes are part of the key
    assert "raster_common.h" in {p.name for p in build._local_headers(SOURCES)}


@pytest.mark.parametrize(
    "attr,value",
    [
        ("executable", "/other/venv/bin/python"),
        ("prefix", "/other/venv"),
    ],
)
def test_key_changes_with_the_interpreter(monkeypatch, attr, value):
    before = build.cache_key(build.key_parts(SOURCES))
    monkeypatch.setattr(sys, attr, value)
    assert build.cache_key(build.key_parts(SOURCES)) != before


def test_key_changes_with_the_torch_install(monkeypatch):
    before = build.cache_key(build.key_parts(SOURCES))
    monkeypatch.setattr(torch, "__file__", "/other/venv/lib/python3.11/site-packages/torch/__init__.py")
    other_path = build.cache_key(build.key_parts(SOURCES))
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", "0.0.0+other")
    other_version = build.cache_key(build.key_parts(SOURCES))
    monkeypatch.undo()
    monkeypatch.setattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", not torch._C._GLIBCXX_USE_CXX11_ABI, raising=False)
    other_abi = build.cache_key(build.key_parts(SOURCES))
    assert len({before, other_path, other_version, other_abi}) == 4


def _fake_compile(calls: list[Path], module_name: str, fail: bool = False):
    def compile_fn(tmp: Path) -> types.ModuleType:
        calls.append(tmp)
        assert tmp.is_dir() and tmp.name.startswith(f"{module_name}.build-")
        if fail:
            raise RuntimeError("compiler exploded")
        (tmp / f"{module_name}.so").write_bytes(b"not really a library")
        return types.ModuleType(module_name)

    return compile_fn


def test_build_into_place_renames_a_finished_build_and_reuses_it(tmp_path, monkeypatch):
    imported: list[Path] = []
    monkeypatch.setattr(build, "_import_library", lambda name, lib: imported.append(lib) or types.ModuleType(name))
    final = tmp_path / "ext_abc"
    final.mkdir()  # an interrupted older build: folder without a library
    (final / "junk.o").write_bytes(b"")
    calls: list[Path] = []
    build.build_into_place(final, "ext_abc", _fake_compile(calls, "ext_abc"))
    assert len(calls) == 1 and not calls[0].exists()  # the temp folder became final
    assert (final / "ext_abc.so").is_file() and not (final / "junk.o").exists()
    build.build_into_place(final, "ext_abc", _fake_compile(calls, "ext_abc"))
    assert len(calls) == 1 and imported == [final / "ext_abc.so"]  # second call only loads
    assert [p.name for p in tmp_path.iterdir() if ".build-" in p.name] == []


def test_failed_build_leaves_nothing_behind(tmp_path):
    calls: list[Path] = []
    with pytest.raises(RuntimeError, match="exploded"):
        build.build_into_place(tmp_path / "ext_x", "ext_x", _fake_compile(calls, "ext_x", fail=True))
    assert not (tmp_path / "ext_x").exists()
    assert [p.name for p in tmp_path.iterdir() if ".build-" in p.name] == []


def test_concurrent_builders_compile_once(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "_import_library", lambda name, lib: types.ModuleType(name))
    calls: list[Path] = []
    slow = _fake_compile(calls, "ext_c")

    def compile_fn(tmp: Path) -> types.ModuleType:
        threading.Event().wait(0.2)
        return slow(tmp)

    threads = [
        threading.Thread(target=build.build_into_place, args=(tmp_path / "ext_c", "ext_c", compile_fn))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and (tmp_path / "ext_c" / "ext_c.so").is_file()
