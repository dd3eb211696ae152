"""The settings tree: every field reachable by its dotted path, presets as trees, old config.json files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

from recon.config import PRESETS, ReconstructConfig, field_paths, get_field, make_config, parse_settings, set_field
from renderers.gaussians.strategy import DensifyConfig


def _example(value: object) -> str:
    """A command-line string for a value different from ``value`` of the same type."""
    if isinstance(value, bool):
        return str(not value).lower()
    if isinstance(value, int):
        return str(value + 1)
    if isinstance(value, float):
        return repr(min(1.0, value * 0.5 + 0.01) if value <= 1.0 else value * 2)
    if isinstance(value, dict):
        return '{"means": 0.0001}'
    return "none"


def test_every_field_is_settable_from_a_string() -> None:
    base = PRESETS["fast"]
    paths = field_paths(base)
    assert "densify.prune_opa" in paths and "densify.absgrad" in paths and "diffusion.tile" in paths
    assert len(paths) > 55
    choices = {
        "representation": "mesh",
        "prior": "diffusion",
        "mesh.method": "poisson",
        "poses.method": "colmap",
        "preset": "quality",
        "device": "cpu",
        "track": "9",
        "diffusion.weights": "/some/folder",
        "densify.max_gaussians": "1234",
        "densify.refine_stop_frac": "0.5",
        "mode": "scene",
        "init.scene_points": "random",
        "poses.hfov_deg": "45",
        "stereo.max_rel_depth": "0.05",
    }
    for path in paths:
        text = choices.get(path, _example(get_field(base, path)))
        config = make_config("fast", settings={path: text})
        assert get_field(config, path) != get_field(base, path), path
        again = ReconstructConfig.from_dict(json.loads(json.dumps(config.to_dict())))
        assert again == config, path


def test_components_own_their_defaults() -> None:
    # Densification fields no preset changes keep DensifyConfig's own defaults (gsplat's).
    assert PRESETS["fast"].densify.prune_opa == DensifyConfig().prune_opa
    assert PRESETS["fast"].densify.grow_scale3d == DensifyConfig().grow_scale3d
    assert PRESETS["quality"].densify.refine_start_iter == 500 and PRESETS["fast"].densify.refine_start_iter == 100
    assert PRESETS["plain"].loss.use_masks is False and PRESETS["plain"].init.visual_hull is False


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"densify.nope": "1"}, "unknown setting 'densify.nope'"),
        ({"densify.prune_opa": "abc"}, "densify.prune_opa takes a number"),
        ({"iterations": "2.5"}, "iterations takes a whole number"),
        ({"loss.use_masks": "maybe"}, "loss.use_masks takes true or false"),
        ({"densify": "1"}, "densify is a group of settings"),
        ({"train.coarse_until": "1.5"}, "train.coarse_until must be a fraction"),
        ({"mesh.method": "marching"}, "mesh.method must be one of"),
        ({"init.points": "0"}, "init.points must be a number >= 1"),
        ({"train.lrs": "[1, 2]"}, "train.lrs takes a JSON object"),
        ({"stereo.slant_deg": "85"}, "stereo.slant_deg must be below 80 degrees"),
        ({"stereo.max_sources": "-1"}, "stereo.max_sources must be a number >= 0"),
    ],
)
def test_bad_settings_name_the_path(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_config("fast", settings=settings)


def test_parse_settings() -> None:
    assert parse_settings(["a.b=1", "c= x "]) == {"a.b": "1", "c": "x"}
    with pytest.raises(ValueError, match="PATH=VALUE"):
        parse_settings(["novalue"])


def test_old_flat_config_json_loads_and_unknown_keys_are_reported() -> None:
    said: list[str] = []
    old = {
        "preset": "fast",
        "iterations": 60,
        "init_points": 1500,
        "refine_start": 20,
        "prior_start": 0.5,
        "lambda_dssim": 0.3,
        "pose_refine": False,
        "mesh_method": "poisson",
        "gone_setting": 1,
    }
    config = ReconstructConfig.from_dict(old, report=said.append)
    assert (config.iterations, config.init.points, config.densify.refine_start_iter) == (60, 1500, 20)
    assert (config.diffusion.start, config.loss.dssim, config.poses.refine, config.mesh.method) == (
        0.5,
        0.3,
        False,
        "poisson",
    )
    assert len(said) == 1 and "gone_setting" in said[0]


def test_set_field_returns_a_copy() -> None:
    base = PRESETS["fast"]
    changed = set_field(base, "densify.prune_opa", 0.5)
    assert base.densify.prune_opa != 0.5 and changed.densify.prune_opa == 0.5
    assert all(is_dataclass(getattr(changed, f.name)) == is_dataclass(getattr(base, f.name)) for f in fields(base))


def test_cli_set_reaches_the_run_and_config_json(tiny_scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from apps.cli import main; main()",
            "reconstruct",
            str(tiny_scene),
            "--out",
            str(out),
            "--track",
            "3",
            "--iterations",
            "3",
            "--set",
            "densify.prune_opa=0.02",
            "--set",
            "init.points=300",
            "--set",
            'train.lrs={"means": 0.0001}',
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((out / "config.json").read_text())
    assert saved["densify"]["prune_opa"] == 0.02 and saved["init"]["points"] == 300
    assert saved["train"]["lrs"] == {"means": 0.0001}
    assert json.loads((out / "metrics.json").read_text())["num_gaussians"] <= 300


def test_steps_per_view_sets_the_steps_from_the_view_count_unless_iterations_are_given() -> None:
    from recon.config import SCENE_MAX_STEPS, STEPS_RANGE

    config = make_config("fast", steps_per_view=150, object_steps_per_view=0)
    assert config.for_views(3, scene=True).iterations == max(STEPS_RANGE[0], 450)
    assert config.for_views(3, scene=False).iterations == config.iterations  # object mode keeps its floor
    assert config.for_views(8, scene=False).iterations == 1200 and config.for_views(8, scene=True).steps_per_view == 0
    assert config.for_views(1000, scene=False).iterations == STEPS_RANGE[1]
    assert config.for_views(1000, scene=True).iterations == SCENE_MAX_STEPS < STEPS_RANGE[1]  # dearer steps
    assert make_config("fast").for_views(9, scene=True).iterations == SCENE_MAX_STEPS  # 9 photos of a scene
    assert make_config("fast").for_views(8, scene=False).iterations == 8 * 340  # lego's 8 views keep theirs
    assert "per view" in config.steps_label()
    explicit = make_config("fast", settings={"steps_per_view": "150"}, iterations=60)
    assert explicit.steps_per_view == 150  # both given: the per-view rule was asked for by name
    assert make_config("fast", iterations=60).steps_per_view == 0  # --iterations wins over a preset's rule
    assert make_config("fast", iterations=60).for_views(9, scene=True).iterations == 60
    assert make_config("fast", steps_per_view=0).for_views(9, scene=True).iterations == make_config("fast").iterations


def test_object_mode_trains_more_steps_per_view_once_views_are_many() -> None:
    config = make_config("fast", steps_per_view=170, object_steps_per_view=340)
    assert config.for_views(8, scene=False).iterations == 2720  # object mode: 340 a view
    assert config.for_views(8, scene=True).iterations == 1360  # scene mode keeps 170 a view
    assert config.for_views(2, scene=False).iterations == config.iterations  # few views: the object floor
    assert make_config("fast", iterations=500).for_views(8, scene=False).iterations == 500  # explicit steps win
