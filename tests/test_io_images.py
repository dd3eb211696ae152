"""The image loader (recon.io.images), image folders (recon.io.image_folder), detection and the CLI error path."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image, ImageOps

from recon.errors import ReconInputError
from recon.io.detect import detect_format, read_views
from recon.io.image_folder import read_image_folder
from recon.io.images import (
    exif_focal_px,
    image_size,
    load_image,
    load_mask,
    natural_key,
    resize_image,
    save_image,
    target_size,
)

W, H = 32, 24
REPO = Path(__file__).resolve().parents[1]


def pattern(seed: int, w: int = W, h: int = H) -> np.ndarray:
    """A uint8 RGB test image with structure (so orientation errors show)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    img[: h // 4, : w // 4] = 255
    return img


def write_png(path: Path, arr: np.ndarray) -> Path:
    """Write with Pillow (independent of the code under test); arr is RGB/RGBA/gray uint8 or uint16 gray."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def write_jpeg(path: Path, arr: np.ndarray, exif_tags: dict | None = None, orientation: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if exif_tags:
        ifd = exif.get_ifd(ExifTags.IFD.Exif)
        ifd.update(exif_tags)
    Image.fromarray(arr).save(path, quality=98, exif=exif)
    return path


# ------------------------------------------------------------------------------------------------ load_image
def test_load_png_rgb_exact(tmp_path):
    arr = pattern(0)
    rgb, alpha = load_image(write_png(tmp_path / "a.png", arr))
    assert rgb.dtype == np.float32 and rgb.shape == (H, W, 3) and alpha is None
    np.testing.assert_allclose(rgb, arr / 255.0, atol=1e-7)


def test_load_png_16bit_gray_and_rgba(tmp_path):
    gray16 = (np.arange(W * H, dtype=np.uint16).reshape(H, W) * 80).astype(np.uint16)
    path16 = tmp_path / "g16.png"
    cv2.imwrite(str(path16), gray16)
    rgb, alpha = load_image(path16)
    assert rgb.shape == (H, W, 3) and alpha is None
    np.testing.assert_allclose(rgb[..., 1], gray16 / 65535.0, atol=1e-6)

    rgb16 = np.stack([gray16, gray16 // 2, gray16 // 3], axis=2)
    path_c16 = tmp_path / "c16.png"
    cv2.imwrite(str(path_c16), rgb16[..., ::-1])  # OpenCV wants BGR
    rgb, _ = load_image(path_c16)
    np.testing.assert_allclose(rgb, rgb16 / 65535.0, atol=1e-6)

    rgba = np.concatenate([pattern(1), np.full((H, W, 1), 128, np.uint8)], axis=2)
    rgb, alpha = load_image(write_png(tmp_path / "rgba.png", rgba))
    np.testing.assert_allclose(rgb, rgba[..., :3] / 255.0, atol=1e-7)
    np.testing.assert_allclose(alpha, 128 / 255.0, atol=1e-7)

    la = np.stack([pattern(2)[..., 0], np.full((H, W), 7, np.uint8)], axis=2)
    path_la = tmp_path / "la.png"
    Image.fromarray(la, mode="LA").save(path_la)
    rgb, alpha = load_image(path_la)
    np.testing.assert_allclose(rgb[..., 2], la[..., 0] / 255.0, atol=1e-7)
    np.testing.assert_allclose(alpha, 7 / 255.0, atol=1e-7)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_applied(tmp_path, orientation):
    arr = np.zeros((H, W, 3), np.uint8)
    arr[2:8, 3:12] = 255  # one bright block near the top-left
    path = write_jpeg(tmp_path / "o.jpg", arr, orientation=orientation)
    rgb, _ = load_image(path)
    with Image.open(path) as im:
        ref = np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.float32) / 255.0
    assert rgb.shape == ref.shape
    assert np.abs(rgb - ref).mean() < 0.02
    assert image_size(path) == (rgb.shape[1], rgb.shape[0])


def test_unreadable_and_missing_images(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ReconInputError, match="broken.png"):
        load_image(bad)
    with pytest.raises(ReconInputError, match="nothere.jpg"):
        load_image(tmp_path / "nothere.jpg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ReconInputError, match="empty.png"):
        load_image(empty)


# ------------------------------------------------------------------------------------------------ save / masks / resize
def test_save_image_round_trip_and_atomic(tmp_path):
    rng = np.random.default_rng(3)
    img = rng.random((H, W, 3)).astype(np.float32)
    out = tmp_path / "sub" / "x.png"
    save_image(out, img)
    back, alpha = load_image(out)
    assert alpha is None
    assert np.abs(back - img).max() <= 0.5 / 255 + 1e-6
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.png"]  # no temporary file left behind
    rgba = np.concatenate([img, np.full((H, W, 1), 0.25, np.float32)], axis=2)
    save_image(tmp_path / "y.png", rgba)
    back, alpha = load_image(tmp_path / "y.png")
    assert np.abs(back - img).max() <= 0.5 / 255 + 1e-6
    assert alpha is not None and abs(float(alpha.mean()) - 0.25) < 1 / 255
    save_image(tmp_path / "g.png", np.eye(4, dtype=bool))
    assert load_mask(tmp_path / "g.png")[1, 1] == 1.0


def test_load_mask_variants(tmp_path):
    m = np.zeros((H, W), np.uint8)
    m[5:15, 5:20] = 255
    np.testing.assert_array_equal(load_mask(write_png(tmp_path / "m255.png", m)), m / 255.0)
    np.testing.assert_array_equal(load_mask(write_png(tmp_path / "m01.png", m // 255)), m / 255.0)
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 3] = m
    np.testing.assert_array_equal(load_mask(write_png(tmp_path / "ma.png", rgba)), m / 255.0)
    rgb = np.repeat(m[..., None], 3, axis=2)
    np.testing.assert_array_equal(load_mask(write_png(tmp_path / "mrgb.png", rgb)), m / 255.0)


def test_resize_image_area_average():
    img = np.zeros((4, 4, 3), np.float32)
    img[::2, ::2] = 1.0  # one lit pixel per 2x2 block
    small = resize_image(img, 2, 2)
    np.testing.assert_allclose(small, 0.25, atol=1e-6)
    assert resize_image(img, 4, 4) is img
    big = resize_image(np.ones((3, 5), np.float32), 10, 6)
    assert big.shape == (6, 10)
    assert resize_image(np.ones((4, 4, 1), np.float32), 2, 2).shape == (2, 2, 1)


def test_target_size():
    assert target_size(32, 24) == (32, 24)
    assert target_size(32, 24, downscale=2) == (16, 12)
    assert target_size(4000, 3000, max_size=800) == (800, 600)
    assert target_size(32, 24, downscale=2, max_size=100) == (16, 12)
    with pytest.raises(ReconInputError):
        target_size(32, 24, downscale=0.5)


def test_natural_key():
    names = ["img10.png", "img2.png", "IMG1.png", "img2b.png"]
    assert sorted(names, key=natural_key) == ["IMG1.png", "img2.png", "img2b.png", "img10.png"]


# ------------------------------------------------------------------------------------------------ EXIF focal
def test_exif_focal_35mm(tmp_path):
    path = write_jpeg(tmp_path / "f.jpg", pattern(4), exif_tags={0xA405: 28})
    f = exif_focal_px(path, W, H)
    assert f == pytest.approx(28 * math.hypot(W, H) / math.hypot(36, 24))


def test_exif_focal_from_focal_plane_resolution(tmp_path):
    # 4.0 mm lens, 500 pixels per cm on the sensor (unit 3 = cm) -> 4 * 50 = 200 px.
    tags = {0x920A: 4.0, 0xA20E: 500.0, 0xA210: 3}
    path = write_jpeg(tmp_path / "f.jpg", pattern(5), exif_tags=tags)
    assert exif_focal_px(path, W, H) == pytest.approx(200.0)
    # Same, with PixelXDimension saying the original was twice as large -> the stored image has half the focal.
    tags2 = {**tags, 0xA002: 2 * W, 0xA003: 2 * H}
    path2 = write_jpeg(tmp_path / "f2.jpg", pattern(5), exif_tags=tags2)
    assert exif_focal_px(path2, W, H) == pytest.approx(100.0)


def test_exif_focal_absent(tmp_path):
    assert exif_focal_px(write_jpeg(tmp_path / "n.jpg", pattern(6)), W, H) is None
    assert exif_focal_px(write_jpeg(tmp_path / "fl.jpg", pattern(6), exif_tags={0x920A: 4.0}), W, H) is None
    assert exif_focal_px(write_png(tmp_path / "n.png", pattern(6)), W, H) is None


# ------------------------------------------------------------------------------------------------ image folders
def make_folder(root: Path, n: int = 3, ext: str = ".png", alpha: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in [10, 2, 1][:n] if n <= 3 else range(n):
        arr = pattern(i)
        if alpha:
            a = np.zeros((H, W, 1), np.uint8)
            a[4:20, 6:26] = 255
            arr = np.concatenate([arr, a], axis=2)
        if ext == ".png":
            write_png(root / f"IMG_{i}{ext}", arr)
        else:
            write_jpeg(root / f"IMG_{i}{ext}", arr, exif_tags={0xA405: 35})
    return root


def test_read_image_folder_basic(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    (folder / "notes.txt").write_text("ignored")
    (folder / ".hidden.png").write_bytes(b"junk")
    vs = read_image_folder(folder)
    assert vs.names == ["IMG_1.png", "IMG_2.png", "IMG_10.png"]  # natural order
    assert vs.cameras is None and vs.masks is None and len(vs) == 3
    assert all(im.shape == (H, W, 3) and im.dtype == np.float32 for im in vs.images)
    np.testing.assert_allclose(vs.images[2], pattern(10) / 255.0, atol=1e-7)
    assert vs.meta["exif_focal_px"] == [None, None, None]
    assert vs.source == folder


def test_read_image_folder_jpeg_exif_and_downscale(tmp_path):
    folder = make_folder(tmp_path / "imgs", ext=".jpg")
    vs = read_image_folder(folder, downscale=2)
    assert all(im.shape == (H // 2, W // 2, 3) for im in vs.images)
    expected = 35 * math.hypot(W, H) / math.hypot(36, 24) / 2  # in pixels of the half-size images
    assert vs.meta["exif_focal_px"] == pytest.approx([expected] * 3)
    vs2 = read_image_folder(folder, max_size=16)
    assert vs2.images[0].shape == (12, 16, 3)


def test_masks_from_alpha(tmp_path):
    vs = read_image_folder(make_folder(tmp_path / "imgs", alpha=True))
    assert vs.masks is not None and len(vs.masks) == 3
    assert vs.masks[0].shape == (H, W) and vs.masks[0][10, 10] == 1.0 and vs.masks[0][0, 0] == 0.0
    # Fully opaque alpha channels are not masks.
    folder = tmp_path / "opaque"
    for i in range(2):
        write_png(folder / f"{i}.png", np.concatenate([pattern(i), np.full((H, W, 1), 255, np.uint8)], axis=2))
    assert read_image_folder(folder).masks is None


def test_masks_from_folder(tmp_path):
    folder = make_folder(tmp_path / "imgs", ext=".jpg")
    masks = tmp_path / "masks"
    for i in (1, 2, 10):
        m = np.zeros((H, W), np.uint8)
        m[: i + 2] = 255
        write_png(masks / f"IMG_{i}.png", m)
    vs = read_image_folder(folder, masks_dir=masks, downscale=2)
    assert vs.masks is not None and vs.masks[2].shape == (H // 2, W // 2)
    assert vs.masks[2][0, 0] == 1.0 and vs.masks[2][-1, -1] == 0.0
    assert vs.masks[0].sum() < vs.masks[2].sum()  # matched by name, not by order of listing
    # A masks/ subfolder inside the image folder is picked up without being named.
    inner = make_folder(tmp_path / "inner", ext=".jpg")
    masks.rename(inner / "masks")
    vs2 = read_image_folder(inner)
    assert vs2.masks is not None and vs2.masks[2][0, 0] == 1.0 and len(vs2) == 3
    # scene/images + scene/masks, given the scene folder.
    scene = tmp_path / "scene"
    scene.mkdir()
    inner.rename(scene / "images")
    (scene / "images" / "masks").rename(scene / "masks")
    assert detect_format(scene) == "images"
    vs3 = read_views(scene)
    assert vs3.source == scene / "images" and vs3.masks is not None and vs3.masks[0][0, 0] == 1.0


def test_image_folder_errors(tmp_path, caplog):
    with pytest.raises(ReconInputError, match="missing_dir.*does not exist"):
        read_image_folder(tmp_path / "missing_dir")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ReconInputError, match="file.txt.*not a folder"):
        read_image_folder(f)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReconInputError, match="empty.*no images"):
        read_image_folder(empty)
    one = make_folder(tmp_path / "one", n=1)
    with pytest.raises(ReconInputError, match="one.*found 1 images; need at least 2"):
        read_image_folder(one)

    bad = make_folder(tmp_path / "bad")
    (bad / "IMG_5.png").write_bytes(b"\x89PNG garbage")  # named and skipped (issue 17)
    with caplog.at_level("WARNING"):
        assert "IMG_5.png" not in read_image_folder(bad).names
    assert "IMG_5.png: skipped: cannot decode" in caplog.text

    mixed = make_folder(tmp_path / "mixed")
    write_png(mixed / "IMG_3.png", pattern(3, w=40, h=30))
    with pytest.raises(ReconInputError, match=r"IMG_3.png: image is 40x30 but IMG_1.png is 32x24"):
        read_image_folder(mixed)


def test_mask_folder_errors(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    masks = tmp_path / "masks"
    write_png(masks / "IMG_1.png", np.zeros((H, W), np.uint8))
    write_png(masks / "IMG_2.png", np.zeros((H, W), np.uint8))
    with pytest.raises(ReconInputError, match="no mask for image IMG_10.png"):
        read_image_folder(folder, masks_dir=masks)
    write_png(masks / "IMG_10.png", np.zeros((H + 2, W), np.uint8))
    with pytest.raises(ReconInputError, match=r"IMG_10.png: mask is 32x26 but image IMG_10.png is 32x24"):
        read_image_folder(folder, masks_dir=masks)
    with pytest.raises(ReconInputError, match="nomasks.*does not exist"):
        read_image_folder(folder, masks_dir=tmp_path / "nomasks")


# ------------------------------------------------------------------------------------------------ detection
def test_detect_image_folder_and_nothing(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    assert detect_format(folder) == "images"
    assert read_views(folder, downscale=2.0).images[0].shape == (H // 2, W // 2, 3)
    # Options of other readers are accepted at their defaults, rejected otherwise.
    assert len(read_views(folder, images_dir=None, downscale=1.0)) == 3
    with pytest.raises(ReconInputError, match="images_dir"):
        read_views(folder, images_dir=tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReconInputError, match="empty.*no images, transforms.json, COLMAP"):
        read_views(empty)
    with pytest.raises(ReconInputError, match="nowhere.*does not exist"):
        read_views(tmp_path / "nowhere")
    with pytest.raises(ReconInputError, match="IMG_1.png.*single image"):
        read_views(folder / "IMG_1.png")


def test_size_options_applied_after_readers_without_them():
    """read_views gives downscale/max_size to every kind of input, resizing after readers that lack them."""
    from recon.cameras import Camera, intrinsics
    from recon.io.detect import _call
    from recon.io.types import ViewSet

    cam = Camera(K=intrinsics(30, 30, 16, 12), viewmat=np.eye(4), width=W, height=H)
    mask = np.zeros((H, W), np.float32)
    mask[:, : W // 2] = 1.0
    seen = {}

    def reader(path, split="train"):  # like read_spare_scene: no size options
        seen["split"] = split
        return ViewSet(
            names=["a", "b"],
            images=[np.ones((H, W, 3), np.float32)] * 2,
            cameras=[cam, cam],
            masks=[mask, mask],
            meta={"exif_focal_px": [30.0, None]},
        )

    vs = _call(reader, "scene", {"downscale": 2.0, "max_size": None, "split": "test", "masks_dir": None})
    assert seen["split"] == "test"
    assert vs.images[1].shape == (H // 2, W // 2, 3) and vs.masks[0].shape == (H // 2, W // 2)
    assert vs.cameras[0].fx == 15.0 and vs.cameras[0].width == W // 2 and cam.width == W
    assert vs.meta["exif_focal_px"] == [15.0, None]
    assert vs.masks[0][0, 0] == 1.0 and vs.masks[0][0, -1] == 0.0
    assert _call(reader, "scene", {"max_size": 16}).images[0].shape == (12, 16, 3)
    with pytest.raises(ReconInputError, match="downscale must be >= 1"):
        _call(reader, "scene", {"downscale": 0.5})
    with pytest.raises(ReconInputError, match="scene: option\\(s\\) masks_dir do not apply"):
        _call(reader, "scene", {"masks_dir": "m"})


def test_detect_spare_layout_by_names(tmp_path):
    scene = tmp_path / "scene"
    for i in range(3):
        write_png(scene / "images" / f"cam_{i + 1:03d}_3_0000.png", pattern(i))
    assert detect_format(scene) == "spare"


# ------------------------------------------------------------------------------------------------ CLI error path
def test_cli_main_turns_input_error_into_exit_2(tmp_path, monkeypatch, capsys):
    """apps.cli.main: a ReconInputError raised inside a command -> one stderr line, exit code 2."""
    import apps.cli as cli

    missing = tmp_path / "no_such_folder"

    def fake_make_scene(out, **kwargs):
        read_image_folder(missing)

    import recon.bench

    fake = type(sys)("recon.bench.synth")
    fake.make_scene = fake_make_scene
    monkeypatch.setitem(sys.modules, "recon.bench.synth", fake)
    monkeypatch.setattr(recon.bench, "synth", fake, raising=False)
    with pytest.raises(SystemExit) as exc:
        cli.main(["make-scene", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no_such_folder" in err and "Traceback" not in err


def test_cli_input_error_in_subprocess(tmp_path):
    """Same, in a fresh interpreter: the process exits 2 and prints exactly one line, no traceback."""
    code = (
        "import sys, apps.cli as cli\n"
        "from recon.io.detect import read_views\n"
        "@cli.app.command('probe-io')\n"
        "def probe(path: str) -> None:\n"
        "    read_views(path)\n"
        "cli.main(['probe-io', sys.argv[1]])\n"
    )
    bad = tmp_path / "broken_input"
    bad.mkdir()
    proc = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("recon: error:") and "broken_input" in lines[0]
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------------ hostile files
def png_bytes(width: int, height: int, rows: bytes | None = None, color_type: int = 0) -> bytes:
    """A PNG written by hand: IHDR for ``width`` x ``height`` 8-bit (gray by default), IDAT of ``rows``
    (raw filtered scanlines, compressed here; none: an empty stream), IEND. Checksums are right."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows or b"")) + chunk(b"IEND", b"")
    )


def big_blank_png(side: int) -> bytes:
    """A real, complete side x side gray PNG (all zeros): ~140 KB on disk for side = 12000, 144 MB decoded."""
    import struct
    import zlib

    comp = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    head = png_bytes(side, side)[:33]  # signature + IHDR

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return head + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def run_with_timeout(fn, seconds: float = 30.0):
    """fn() in a daemon thread: a reader that blocks (a FIFO) fails the test instead of hanging the run."""
    import threading

    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"blocked for more than {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def test_png_header_declaring_60000x60000_is_refused_before_decoding(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bytes(60000, 60000))
    assert len(bomb.read_bytes()) < 80
    decoded = []
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(a))
    for fn in (load_image, load_mask, image_size):
        with pytest.raises(
            ReconInputError,
            match=r"bomb.png: image is 60000x60000 \(3600 megapixels\), over the "
            r"100-megapixel limit",
        ) as err:
            fn(bomb)
        assert "\n" not in str(err.value)
    assert not decoded


def test_real_12000x12000_png_is_refused_from_its_header(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "imgs")
    (folder / "IMG_9.png").write_bytes(big_blank_png(12000))
    decoded = []
    real_imdecode = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda buf, flags: decoded.append(len(buf)) or real_imdecode(buf, flags))
    with pytest.raises(ReconInputError, match=r"IMG_9.png: image is 12000x12000 \(144 megapixels\)"):
        read_image_folder(folder)
    assert max(decoded, default=0) < 10_000  # only the small images were decoded, never the 144 MB one


def test_pixel_budget_is_one_module_constant(tmp_path, monkeypatch):
    from recon.io import image_header

    path = write_png(tmp_path / "a.png", pattern(0))
    assert load_image(path)[0].shape == (H, W, 3)
    monkeypatch.setattr(image_header, "MAX_IMAGE_PIXELS", W * H - 1)
    for fn in (load_image, load_mask, image_size):
        with pytest.raises(ReconInputError, match=r"a.png: image is 32x24 \(0.000768 megapixels\), over the"):
            fn(path)
    with pytest.raises(ReconInputError, match="IMG_1.png: image is 32x24"):
        read_views(make_folder(tmp_path / "f"))


@pytest.mark.parametrize(
    "data, message",
    [
        (png_bytes(32, 24)[:20], "truncated PNG header"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIDAT" + bytes(30), "no IHDR chunk first"),
        (png_bytes(0, 24), "header declares a 0x24 image"),
        (b"\xff\xd8\xff\xda\x00\x02", "no frame header"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "truncated JPEG header"),
        (
            b"\xff\xd8\xff\xc0\x00\x11\x08\xea\x60\xea\x60\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01\xff\xd9",
            r"image is 60000x60000",
        ),
        (b"\x00" * 100, "cannot decode image"),
        (png_bytes(32, 24), "cannot decode image"),  # header fine, no pixel data
    ],
)
def test_corrupt_headers_are_one_line_errors(tmp_path, data, message):
    path = tmp_path / "x.png"
    path.write_bytes(data)
    for fn in (load_image, load_mask):
        with pytest.raises(ReconInputError, match=message) as err:
            fn(path)
        assert "\n" not in str(err.value) and "x.png" in str(err.value)


def test_special_files_in_an_image_folder(tmp_path, caplog):
    import os

    fifo_dir = make_folder(tmp_path / "fifo")
    os.mkfifo(fifo_dir / "IMG_9.png")  # named and skipped (issue 17), never opened
    with caplog.at_level("WARNING"):
        assert len(run_with_timeout(lambda: read_image_folder(fifo_dir))) == 3
    assert "IMG_9.png: skipped: image file is a FIFO, not a regular file" in caplog.text
    with pytest.raises(ReconInputError, match="IMG_9.png: image file is a FIFO"):
        run_with_timeout(lambda: load_image(fifo_dir / "IMG_9.png"))

    link_dir = make_folder(tmp_path / "link")
    (link_dir / "IMG_9.png").symlink_to(link_dir / "gone.png")
    with caplog.at_level("WARNING"):
        assert len(read_image_folder(link_dir)) == 3
    assert "IMG_9.png: skipped: image file is a broken symbolic link" in caplog.text

    dir_dir = make_folder(tmp_path / "dir")
    (dir_dir / "IMG_9.png").mkdir()
    with caplog.at_level("WARNING"):
        views = read_image_folder(dir_dir)
    assert len(views) == 3 and "IMG_9.png: skipped: a folder with an image file name" in caplog.text

    same = make_folder(tmp_path / "same")
    (same / "IMG_9.png").symlink_to(same / "IMG_1.png")
    with pytest.raises(ReconInputError, match=r"IMG_9.png: image is the same file as .*IMG_1.png"):
        read_image_folder(same)


def test_non_regular_inputs_are_named(tmp_path):
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, kind in ((Path("/dev/null"), "a device"), (fifo, "a FIFO")):
        with pytest.raises(ReconInputError, match=f"input is {kind}, not a regular file") as err:
            run_with_timeout(lambda p=path: read_views(p))
        assert str(path) in str(err.value)
    os.mkfifo(tmp_path / "masked.png")
    with pytest.raises(ReconInputError, match="masked.png: image file is a FIFO"):
        run_with_timeout(lambda: image_size(tmp_path / "masked.png"))


def test_cli_hostile_inputs_are_one_line_exit_2(tmp_path):
    """recon in a fresh interpreter: /dev/null, JSON nested 100k deep and a PNG bomb each give exit code 2 and
    one stderr line, no traceback."""
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / "transforms.json").write_text('{"frames": ' + "[" * 100_000 + "]" * 100_000 + "}")
    bomb = make_folder(tmp_path / "bomb")
    (bomb / "IMG_9.png").write_bytes(png_bytes(60000, 60000))
    code = (
        "import contextlib, io, sys, apps.cli as cli\n"
        "from recon.io.detect import read_views\n"
        "@cli.app.command('probe-io')\n"
        "def probe(path: str) -> None:\n"
        "    read_views(path)\n"
        "for p in sys.argv[1:]:\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        try:\n"
        "            cli.main(['probe-io', p])\n"
        "        except SystemExit as exc:\n"
        "            print(exc.code, repr(err.getvalue()))\n"
    )
    paths = ["/dev/null", str(deep), str(bomb)]
    proc = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = proc.stdout.strip().splitlines()
    assert len(results) == 3, proc.stdout
    for line, fragment in zip(results, ["input is a device", "nested too deeply", "60000x60000"]):
        code_, err = line.split(" ", 1)
        err = eval(err)  # repr of the captured stderr
        assert code_ == "2" and err.count("\n") == 1 and fragment in err and "Traceback" not in err, line
