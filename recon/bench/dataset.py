"""The SpaRe-style benchmark dataset: generated scenes, two tracks, a dev and a test split, hidden test images.

Layout written by :func:`make_dataset`::

    root/
      benchmark.json                   format, tracks, splits {dev: [scene...], test: [...]}, image size, seeds
      ground_truth/<scene>/            the full generated scene (recon.io.spare layout): the test images and
                                       masks live only here; methods never read this folder
      inputs/track{1,2}/{dev,test}/<scene>/
                                       the participant's view (see :func:`export_inputs`): the track's input
                                       images and masks, every camera, a split file naming the test views

Track 1 has 3 input views, track 2 has 9 (a superset); both score the same 10 test views per scene. The
dev and test splits hold different scenes. A participant scene keeps the SpaRe split file name
(``splits/track3.json`` for track 1, ``splits/track9.json`` for track 2), so ``recon reconstruct --track 3``
reads it like any SpaRe scene.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon.cameras import Camera
from recon.errors import ReconInputError
from recon.io.atomic import atomic_output_dir
from recon.io.images import load_image, load_mask
from recon.io.spare import (
    _dumps,
    camera_file_name,
    image_name,
    read_projection,
    read_split,
    write_spare_scene,
)

FORMAT = "recon-spare-benchmark"
FORMAT_VERSION = 1
BENCHMARK_JSON = "benchmark.json"
GT_DIR = "ground_truth"
INPUTS_DIR = "inputs"
SPLITS = ("dev", "test")
# track number -> (input views, split key inside a scene)
TRACKS: dict[int, tuple[int, str]] = {1: (3, "track3"), 2: (9, "track9")}


@dataclass(frozen=True)
class TestView:
    """One hidden test view of a scene: 0-based index, the file name a submission must use, the GT files."""

    index: int
    name: str
    image: Path
    mask: Path


@dataclass(frozen=True)
class Benchmark:
    """A benchmark dataset on disk (read with :func:`load_benchmark`)."""

    root: Path
    width: int
    height: int
    scenes: dict[str, list[str]]  # split -> scene names

    def split_of(self, scene: str) -> str | None:
        return next((s for s, names in self.scenes.items() if scene in names), None)

    def inputs_dir(self, track: int, split: str) -> Path:
        """Folder of the participant scenes of ``track`` and ``split``."""
        check_track_split(track, split)
        return self.root / INPUTS_DIR / f"track{track}" / split

    def test_views(self, scene: str) -> list[TestView]:
        """The scene's hidden test views (same for both tracks), from its ground-truth split file."""
        gt = self.root / GT_DIR / scene
        entries = read_split(gt / "splits" / f"{TRACKS[1][1]}.json")
        entry = entries.get(scene) or next(iter(entries.values()))
        out = []
        for i in entry["test_views"]:
            name = image_name(i)
            out.append(TestView(i, name, gt / "images" / name, gt / "masks" / name))
        return out


def check_track_split(track: int, split: str) -> None:
    """ReconInputError unless ``track`` is 1 or 2 and ``split`` is dev or test."""
    if track not in TRACKS:
        raise ReconInputError(f"track must be 1 (3 input views) or 2 (9 input views), got {track}")
    if split not in SPLITS:
        raise ReconInputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def load_benchmark(root: str | Path) -> Benchmark:
    """Read ``root/benchmark.json``; ReconInputError when ``root`` is not a benchmark dataset."""
    root = Path(root)
    path = root / BENCHMARK_JSON
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReconInputError(
            "not a benchmark dataset (no benchmark.json; make one with `recon bench make-dataset`)", root
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReconInputError(f"not valid JSON ({exc})", path) from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ReconInputError(f"not a {FORMAT} file", path)
    scenes = {s: [str(n) for n in info.get("splits", {}).get(s, [])] for s in SPLITS}
    return Benchmark(root=root, width=int(info["width"]), height=int(info["height"]), scenes=scenes)


def _participant_scene(gt_scene: Path, out: Path, track: int) -> Path:
    """Write the participant's view of one ground-truth scene for ``track`` (inputs, masks, all cameras)."""
    info = json.loads((gt_scene / "scene.json").read_text())
    name, width, height, n = str(info["name"]), int(info["width"]), int(info["height"]), int(info["n_cameras"])
    key = TRACKS[track][1]
    entry = read_split(gt_scene / "splits" / f"{key}.json")[name]
    cameras = [
        Camera.from_projection(read_projection(gt_scene / "cameras" / camera_file_name(i)), width, height)
        for i in range(n)
    ]
    images = {i: load_image(gt_scene / "images" / image_name(i))[0] for i in entry["input_views"]}
    masks = {i: load_mask(gt_scene / "masks" / image_name(i)) for i in entry["input_views"]}
    split = {"input_views": entry["input_views"], "test_views": entry["test_views"]}
    # Generator metadata (seed, objects) stays out: it would let a method regenerate the hidden views.
    return write_spare_scene(
        out,
        cameras,
        images,
        name=name,
        masks=masks,
        splits={key: split},
        meta={"benchmark": {"track": track, "n_inputs": TRACKS[track][0]}},
    )


def export_inputs(root: str | Path, track: int, split: str, out: str | Path, overwrite: bool = False) -> Path:
    """Write the participant's view of ``split`` for ``track`` to ``out``: one SpaRe scene per scene holding
    the input images and masks, every camera and the split file (test view indices, no test images)."""
    bench = load_benchmark(root)
    check_track_split(track, split)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        for scene in bench.scenes[split]:
            _participant_scene(bench.root / GT_DIR / scene, tmp / scene, track)
    return Path(out)


def make_dataset(
    out: str | Path,
    n_dev: int = 2,
    n_test: int = 3,
    width: int = 400,
    height: int = 300,
    first_seed: int = 1000,
    overwrite: bool = False,
) -> Path:
    """Generate ``n_dev + n_test`` scenes (seeds ``first_seed``...) and write the benchmark layout (module doc).

    Only the views some split uses are rendered. The write is atomic: a failure leaves nothing behind.
    """
    from recon.bench.synth import make_scene

    if n_dev < 1 or n_test < 0:
        raise ReconInputError(f"need at least one dev scene and no negative counts, got dev={n_dev} test={n_test}")
    seeds = {
        "dev": list(range(first_seed, first_seed + n_dev)),
        "test": list(range(first_seed + n_dev, first_seed + n_dev + n_test)),
    }
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        splits: dict[str, list[str]] = {}
        for split, split_seeds in seeds.items():
            splits[split] = []
            for seed in split_seeds:
                name = f"synth_{seed}"
                make_scene(tmp / GT_DIR / name, seed=seed, width=width, height=height, views="splits", name=name)
                splits[split].append(name)
        info = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "width": width,
            "height": height,
            "tracks": {
                str(t): {"input_views": n, "split_file": f"splits/{key}.json"} for t, (n, key) in TRACKS.items()
            },
            "test_views_per_scene": 10,
            "splits": splits,
            "seeds": seeds,
            "submission": "one folder per scene holding the test views as cam_{i+1:03d}_3_0000.png "
            f"({width}x{height} RGB PNG)",
        }
        (tmp / BENCHMARK_JSON).write_text(_dumps(info))
        for track in TRACKS:
            for split in SPLITS:
                dest = tmp / INPUTS_DIR / f"track{track}" / split
                dest.mkdir(parents=True, exist_ok=True)
                for scene in splits[split]:
                    _participant_scene(tmp / GT_DIR / scene, dest / scene, track)
    return Path(out)


def load_ground_truth(view: TestView) -> tuple[np.ndarray, np.ndarray]:
    """(HxWx3 float32 image, HxW float32 mask) of a hidden test view."""
    return load_image(view.image)[0], load_mask(view.mask)
