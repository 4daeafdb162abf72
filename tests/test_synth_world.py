"""The procedural world and its renderers: determinism, continuity, geometry of views."""

import numpy as np
import pytest

from geocells.config import load_preset, resolve_config
from geocells.synth.aerial import AerialRenderer
from geocells.synth.capture import campaign_capture, sample_capture
from geocells.synth.config import SynthConfig
from geocells.synth.street import StreetRenderer
from geocells.synth.world import BUILDING, ROAD, World


@pytest.fixture(scope="module")
def cfg():
    return resolve_config(SynthConfig, load_preset("tiny", "synth"))


@pytest.fixture(scope="module")
def world(cfg):
    return World(cfg)


def _grid(world, n=64, step=7.0):
    cx, cy = world.center_xy
    gx, gy = np.meshgrid(cx[0] + np.arange(n) * step, cy[0] + np.arange(n) * step)
    return gx.ravel(), gy.ravel()


def test_world_is_deterministic_and_seeded(cfg, world):
    x, y = _grid(world)
    a, b = world.layout(x, y), World(cfg).layout(x, y)
    for name in ("kind", "height", "block_key", "tree_top", "style"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    other = World(resolve_config(SynthConfig, {**load_preset("tiny", "synth"), "seed": 1}))
    assert not np.array_equal(other.layout(x, y).kind, a.kind)


def test_world_has_towns_roads_buildings_and_countryside(world):
    cx, cy = world.center_xy
    rng = np.random.default_rng(0)
    x, y = cx[0] + rng.uniform(-700, 700, 20000), cy[0] + rng.uniform(-700, 700, 20000)
    lay = world.layout(x, y)
    share = np.bincount(lay.kind, minlength=8) / len(x)
    assert share[ROAD] > 0.02 and share[BUILDING] > 0.02
    assert lay.height[lay.kind == BUILDING].min() > 2.0
    assert (lay.u == 0).mean() > 0.1  # some land outside every town


def test_aerial_window_equals_its_halves(cfg, world):
    renderer = AerialRenderer(world, campaign_capture(cfg.aerial_campaign, cfg.seed), cfg.gsd_m)
    col, row = renderer.pixel_of(*world.center_xy)
    col0, row0 = int(col[0]) - 50, int(row[0]) - 40
    whole = renderer.render(col0, row0, 100, 80)
    left = renderer.render(col0, row0, 37, 80)
    right = renderer.render(col0 + 37, row0, 63, 80)
    np.testing.assert_array_equal(whole, np.concatenate([left, right], axis=1))
    top, bottom = renderer.render(col0, row0, 100, 30), renderer.render(col0, row0 + 30, 100, 50)
    np.testing.assert_array_equal(whole, np.concatenate([top, bottom], axis=0))
    # The chunk cache assembles the same pixels.
    renderer.chunk_px = 64
    np.testing.assert_array_equal(whole, renderer.window(col0, row0, 100, 80))


def _building_wall_target(world):
    """A building point, its block and the outward normal of its nearest wall."""
    x, y = _grid(world, 96, 5.0)
    lay = world.layout(x, y)
    urban = np.flatnonzero((lay.kind == BUILDING) & np.isnan(lay.roof_slope))
    assert len(urban), "tiny world has no urban building near its centre"
    i = urban[len(urban) // 2]
    return x[i], y[i], lay.block_key[i], float(lay.wall_normal[i])


def test_camera_in_front_of_a_building_sees_it(cfg, world):
    bx, by, block, normal = _building_wall_target(world)
    direction = np.array([np.cos(normal), np.sin(normal)])
    # Walk out through the wall until we stand on open ground.
    for step in np.arange(1.0, 60.0, 0.5):
        px, py = bx + direction[0] * step, by + direction[1] * step
        if world.layout(np.array([px]), np.array([py])).height[0] == 0:
            break
    cam_x, cam_y = px + direction[0] * 6.0, py + direction[1] * 6.0
    heading_to_building = np.rad2deg(np.arctan2(-direction[0], -direction[1])) % 360
    renderer = StreetRenderer(world, 32, cfg.fov_deg, cfg.camera_height_m, cfg.max_view_m)
    ray_x, ray_y = np.array([cam_x]), np.array([cam_y])
    facing = renderer.render(
        ray_x, ray_y, np.array([heading_to_building]), [campaign_capture(cfg.train_campaign, 0)]
    )
    hd = np.deg2rad(heading_to_building)
    fwd = np.array([[[np.sin(hd), np.cos(hd)]]]).repeat(32, 1)
    wall_d, wall = renderer._march_walls(ray_x, ray_y, fwd)
    assert abs(wall_d[0, 16] - 6.0) < 1.0
    assert wall.block_key[16] == block
    # The facade fills the middle of the image: it differs from the sky seen looking away.
    away = renderer.render(ray_x, ray_y, np.array([(heading_to_building + 180) % 360]),
                           [campaign_capture(cfg.train_campaign, 0)])  # fmt: skip
    assert np.abs(facing[0, 4:12, 12:20].astype(int) - away[0, 4:12, 12:20].astype(int)).mean() > 15


def test_street_views_are_deterministic_and_vary_with_capture(cfg, world):
    x, y = _grid(world, 40, 9.0)
    lay = world.layout(x, y)
    on_road = np.flatnonzero(lay.ground == ROAD)[:4]
    rng = np.random.default_rng(0)
    captures = [sample_capture(cfg.train_campaign, rng) for _ in on_road]
    heading = np.array([0.0, 90.0, 180.0, 270.0])
    renderer = StreetRenderer(world, 48, cfg.fov_deg, cfg.camera_height_m, cfg.max_view_m)
    a = renderer.render(x[on_road], y[on_road], heading, captures)
    b = StreetRenderer(World(cfg), 48, cfg.fov_deg, 2.5, cfg.max_view_m).render(
        x[on_road], y[on_road], heading, captures
    )
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 48, 48, 3) and a.dtype == np.uint8
    other = [sample_capture(cfg.test_campaign, rng) for _ in on_road]
    c = renderer.render(x[on_road], y[on_road], heading, other)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 3
