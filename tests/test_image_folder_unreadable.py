"""A file in an image folder that cannot be read is named and skipped; too few left is a one-line error."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from recon.errors import ReconInputError
from recon.io.image_folder import read_image_folder, unreadable_reason


def _photo(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), (5, 5), 0)
    cv2.imwrite(str(path), img)
    return path


def _folder(tmp_path: Path, n: int = 3) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(n):
        _photo(d / f"IMG_{i}.jpg", i)
    return d


def _truncated(path: Path, src: Path) -> Path:
    data = src.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_each_kind_of_unreadable_file_has_a_reason(tmp_path: Path) -> None:
    good = _photo(tmp_path / "good.jpg")
    assert unreadable_reason(good) is None
    link = tmp_path / "link.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    assert "broken symbolic link" in unreadable_reason(link)
    cut = _truncated(tmp_path / "cut.jpg", good)
    assert "decode" in unreadable_reason(cut)
    png = _photo(tmp_path / "good.png")
    assert unreadable_reason(png) is None
    assert "decode" in unreadable_reason(_truncated(tmp_path / "cut.png", png))
    text = tmp_path / "notes.png"
    text.write_text("not an image at all\n")
    assert "decode" in unreadable_reason(text)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert "empty" in unreadable_reason(empty)


def test_unreadable_files_are_named_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = _folder(tmp_path)
    (d / "IMG_9.jpg").symlink_to(d / "missing.jpg")
    _truncated(d / "IMG_8.jpg", d / "IMG_0.jpg")
    (d / "IMG_7.png").write_text("hello")
    with caplog.at_level(logging.WARNING):
        views = read_image_folder(d)
    assert list(views.names) == ["IMG_0.jpg", "IMG_1.jpg", "IMG_2.jpg"]
    text = caplog.text
    for name, why in [("IMG_9.jpg", "broken symbolic link"), ("IMG_8.jpg", "decode"), ("IMG_7.png", "decode")]:
        assert any(name in r.getMessage() and why in r.getMessage() for r in caplog.records), (name, text)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files without permission")
def test_a_file_without_read_permission_is_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = _folder(tmp_path)
    locked = _photo(d / "IMG_5.jpg", 5)
    locked.chmod(0)
    try:
        with caplog.at_level(logging.WARNING):
            views = read_image_folder(d)
    finally:
        locked.chmod(0o644)
    assert "IMG_5.jpg" not in views.names and "IMG_5.jpg" in caplog.text


def test_too_few_readable_images_is_one_error_naming_the_bad_ones(tmp_path: Path) -> None:
    d = _folder(tmp_path, n=1)
    (d / "IMG_9.jpg").symlink_to(d / "missing.jpg")
    _truncated(d / "IMG_8.jpg", d / "IMG_0.jpg")
    with pytest.raises(ReconInputError) as err:
        read_image_folder(d)
    msg = str(err.value)
    assert "\n" not in msg and "found 1 readable images, need at least 2" in msg
    assert "IMG_9.jpg" in msg and "IMG_8.jpg" in msg and "broken symbolic link" in msg


def test_a_folder_of_broken_links_is_detected_as_images_and_named(tmp_path: Path) -> None:
    from recon.io.detect import read_views

    d = tmp_path / "photos"
    d.mkdir()
    for i in range(3):
        (d / f"IMG_{i}.jpg").symlink_to(d / f"gone_{i}.jpg")
    with pytest.raises(ReconInputError, match="IMG_0.jpg.*broken symbolic link"):
        read_views(d)


def test_cli_error_before_training_is_one_line_without_a_progress_bar(tmp_path: Path) -> None:
    """`recon reconstruct` on a folder that fails while reading prints its error alone (the training bar used to be
    drawn, empty, above it)."""
    import subprocess
    import sys

    d = _folder(tmp_path, n=1)
    _truncated(d / "IMG_8.jpg", d / "IMG_0.jpg")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "COLUMNS": "120"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from apps.cli import main; main()",
            "reconstruct",
            str(d),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    said = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode != 0 and all(line.startswith("recon: ") for line in said), said  # no bar, no blank line
    assert said[-1].startswith("recon: error: ") and "IMG_8.jpg" in said[-1]
