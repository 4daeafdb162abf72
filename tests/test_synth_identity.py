"""What makes places recognisable: buildings of their own, landmarks, terrain, rural features."""

import numpy as np
import pytest

from geocells.config import load_preset, resolve_config
from geocells.synth import landmarks, terrain
from geocells.synth.aerial import AerialRenderer
from geocells.synth.capture import campaign_capture
from geocells.synth.config import SynthConfig
from geocells.synth.facades import building_look
from geocells.synth.layout import URBAN_BIT
from geocells.synth.street import StreetRenderer
from geocells.synth.world import BUILDING, FOREST, TREE, World


@pytest.fixture(scope="module")
def world():
    return World(resolve_config(SynthConfig, load_preset("demo", "synth")))


def _area(world, half=1200.0, step=6.0):
    cx, cy = world.center_xy
    offs = np.arange(-half, half, step)
    gx, gy = np.meshgrid(cx[0] + offs, cy[0] + offs)
    return gx.ravel(), gy.ravel()


def test_neighbouring_buildings_of_one_block_look_different(world):
    x, y = _area(world)
    lay = world.layout(x, y)
    urban = (lay.kind == BUILDING) & ((lay.building_key & URBAN_BIT) != 0)
    blocks, counts = np.unique(lay.block_key[urban], return_counts=True)
    block = blocks[np.argmax(counts)]
    keys = np.unique(lay.building_key[urban & (lay.block_key == block)])
    assert len(keys) >= 4  # a block is several buildings, not one
    look = building_look(world.seed, keys, np.full(len(keys), lay.style[urban][0]), True)
    facades = np.round(look["facade"], 3)
    assert len(np.unique(facades, axis=0)) >= len(keys) - 1
    # The same building looks the same whenever it is asked for.
    again = building_look(world.seed, keys, np.full(len(keys), lay.style[urban][0]), True)
    assert np.array_equal(again["facade"], look["facade"])


def test_a_landmark_rises_above_the_horizon_and_shadows_the_orthophoto(world):
    cx, cy = (float(v[0]) for v in world.center_xy)
    marks = landmarks.sites(world, cx - 2000, cy - 2000, cx + 2000, cy + 2000)
    assert len(marks.x) > 10 and len(np.unique(marks.kind)) >= 4
    i = int(np.argmax(marks.height))  # the tallest, seen from 250 m to its south
    renderer = StreetRenderer(world, 64, 90.0, 2.5, 450.0)
    capture = campaign_capture(world.cfg.train_campaign, 0)
    toward = renderer.render(np.array([marks.x[i]]), np.array([marks.y[i] - 250.0]),
                             np.array([0.0]), [capture])[0].astype(int)  # fmt: skip
    away = renderer.render(np.array([marks.x[i]]), np.array([marks.y[i] - 250.0]),
                           np.array([180.0]), [capture])[0].astype(int)  # fmt: skip
    # The column through the landmark, high above the horizon: not sky when looking at it.
    column = toward[4:20, 31:33]
    sky = away[4:20, 31:33]
    assert np.abs(column - sky).mean() > 10
    height, _ = landmarks.footprint(world, np.array([marks.x[i]]), np.array([marks.y[i]]))
    assert height[0] == pytest.approx(marks.height[i])


def test_terrain_makes_a_skyline_and_hillshade(world):
    x, y = _area(world, half=3000.0, step=150.0)
    relief = terrain.elevation(world, x, y)
    assert relief.max() - relief.min() > 100.0
    gx, gy = np.meshgrid(np.arange(32) * 30.0 + x[0], np.arange(32) * 30.0 + y[0])
    shade = terrain.hillshade(world, gx, gy, -2.0, 0.6, 1.2)
    assert shade.std() > 0.01
    flat = World(resolve_config(SynthConfig, load_preset("demo", "synth"), ["relief_m=0"]))
    assert np.all(terrain.hillshade(flat, gx, gy, -2.0, 0.6, 1.2) == 1.0)


def test_countryside_has_farmsteads_hedges_and_lone_trees(world):
    x, y = _area(world, half=2500.0, step=5.0)
    lay = world.layout(x, y)
    rural = lay.u < 0.02
    farm = rural & (lay.kind == BUILDING)
    hedge = rural & (lay.ground == FOREST) & (lay.height > 0) & (lay.height < 4)
    tree = rural & (lay.kind == TREE)
    assert farm.sum() > 50 and hedge.sum() > 50 and tree.sum() > 50
    # Farm buildings have pitched roofs and a look of their own (not urban shops).
    assert np.isfinite(lay.roof_slope[farm]).all() and (lay.roof_rise[farm] > 0).all()
    assert not ((lay.building_key[farm] & URBAN_BIT) != 0).any()


def test_landmarks_and_terrain_keep_aerial_windows_consistent(world):
    capture = campaign_capture(world.cfg.aerial_campaign, world.seed)
    renderer = AerialRenderer(world, capture, 1.2)
    cx, cy = (float(v[0]) for v in world.center_xy)
    col, row = (int(v) for v in renderer.pixel_of(cx, cy))
    whole = renderer.render(col, row, 96, 64)
    left, right = renderer.render(col, row, 48, 64), renderer.render(col + 48, row, 48, 64)
    assert np.array_equal(whole, np.concatenate([left, right], axis=1))
