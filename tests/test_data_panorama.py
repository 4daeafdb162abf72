"""Panoramas: perspective crops (against painted panoramas and the street renderer),
aspect-ratio errors, the Street View-like synthetic drive, and training on crops."""

import numpy as np
import pytest
from PIL import Image

from geocells.data.images import ImageLoadError
from geocells.data.panorama import fixed_crops, is_panorama, load_panorama, perspective_crop

RED, GREEN, BLUE, YELLOW = (220, 30, 30), (30, 200, 40), (40, 60, 220), (230, 220, 30)


def compass_panorama(height: int = 64, pano_heading: float = 0.0) -> np.ndarray:
    """A panorama whose upper half is painted by compass quadrant (N red, E green, S blue,
    W yellow, each ±45°) and whose lower half is black."""
    width = 2 * height
    azimuth = pano_heading + ((np.arange(width) + 0.5) / width - 0.5) * 360.0
    quadrant = (np.round(np.mod(azimuth, 360.0) / 90.0).astype(int)) % 4
    colours = np.array([RED, GREEN, BLUE, YELLOW], np.uint8)[quadrant]  # [W, 3]
    pano = np.zeros((height, width, 3), np.uint8)
    pano[: height // 2] = colours[None]
    return pano


def dominant(crop: np.ndarray) -> tuple[int, int, int]:
    """Median colour of the upper quarter of a crop."""
    return tuple(int(v) for v in np.median(crop[: crop.shape[0] // 4].reshape(-1, 3), 0))


@pytest.mark.parametrize("pano_heading", [0.0, 75.0, 200.0])
def test_crop_faces_the_compass_heading(pano_heading):
    pano = compass_panorama(64, pano_heading)
    crops = perspective_crop(
        np.stack([pano] * 4), [0.0, 90.0, 180.0, 270.0], 40.0, 0.0, 32, pano_heading
    )
    assert [dominant(c) for c in crops] == [RED, GREEN, BLUE, YELLOW]


def test_crop_across_the_seam_and_pitch():
    pano = compass_panorama(64, pano_heading=0.0)
    # The centre column looks north, so south (180°) sits on the ±180° seam of the image.
    seam = perspective_crop(pano, 180.0, 60.0, 0.0, 32)
    assert seam.shape == (32, 32, 3) and dominant(seam) == BLUE
    assert abs(int(seam[8, 15, 2]) - int(seam[8, 16, 2])) < 10  # no seam line in the middle
    level, up, down = (perspective_crop(pano, 0.0, 90.0, p, 32) for p in (0.0, 20.0, -20.0))
    lit = [float((c.sum(-1) > 0).mean()) for c in (level, up, down)]
    assert abs(lit[0] - 0.5) < 0.05 and lit[1] > lit[0] + 0.1 and lit[2] < lit[0] - 0.1


def test_fixed_crops_and_flags():
    crops = fixed_crops(compass_panorama(64), 0.0, 4, 24, fov=40.0)
    assert crops.shape == (4, 24, 24, 3)
    assert [dominant(c) for c in crops] == [RED, GREEN, BLUE, YELLOW]
    assert is_panorama(np.array([360.0, 90.0, np.nan])).tolist() == [True, False, False]


def test_wrong_aspect_ratio_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "pano.jpg"
    Image.fromarray(np.zeros((64, 100, 3), np.uint8)).save(path)
    with pytest.raises(ImageLoadError, match=r"pano\.jpg.*100 x 64.*twice as wide"):
        load_panorama(path)
    with pytest.raises(ImageLoadError, match="twice as wide"):
        perspective_crop(np.zeros((64, 100, 3), np.uint8), 0.0)
    good = tmp_path / "good.png"
    Image.fromarray(compass_panorama(32)).save(good)
    assert load_panorama(good).shape == (32, 64, 3)


def test_crops_of_a_rendered_panorama_match_rendered_views():
    from geocells.config import load_preset, resolve_config
    from geocells.synth import SynthConfig
    from geocells.synth.capture import sample_capture
    from geocells.synth.coverage import capture_positions
    from geocells.synth.street import StreetRenderer
    from geocells.synth.world import World

    cfg = resolve_config(SynthConfig, load_preset("tiny", "synth"), ["n_train=3"])
    world = World(cfg)
    pos = capture_positions(world)["train"]
    capture = [sample_capture(cfg.train_campaign, np.random.default_rng(1))]
    capture[0] = type(capture[0])(**{**capture[0].__dict__, "noise_sigma": 0.0})
    pano_renderer = StreetRenderer(world, 96, 90.0, 2.5, cfg.max_view_m, panorama=True)
    view_renderer = StreetRenderer(world, 48, 90.0, 2.5, cfg.max_view_m)
    for i, heading in enumerate([10.0, 135.0, 250.0]):
        x, y = pos.x[i : i + 1], pos.y[i : i + 1]
        pano = pano_renderer.render(x, y, np.array([40.0]), capture)[0]
        assert pano.shape == (96, 192, 3)
        view = view_renderer.render(x, y, np.array([heading]), capture)[0].astype(float)
        crop = perspective_crop(pano, heading, 90.0, 0.0, 48, pano_heading=40.0).astype(float)
        assert np.abs(crop - view).mean() < 10.0  # same scene; resampling differs
        other = perspective_crop(pano, heading + 180.0, 90.0, 0.0, 48, pano_heading=40.0)
        assert np.abs(other.astype(float) - view).mean() > np.abs(crop - view).mean()


@pytest.fixture(scope="module")
def panorama_world(tmp_path_factory):
    """A tiny world driven like Street View (small panoramas), with its config."""
    from geocells.config import load_preset, resolve_config
    from geocells.synth import SynthConfig, run

    overrides = ["train_capture=panorama", "panorama_height=32", "n_train=0", "n_val=20",
                 "n_test=4", "min_query_distance_m=4", "capture_spacing_m=15"]  # fmt: skip
    cfg = resolve_config(SynthConfig, load_preset("tiny", "synth"), overrides)
    return run(cfg, tmp_path_factory.mktemp("pano") / "ds"), cfg


def test_panorama_drive_spacing_and_queries(panorama_world):
    from scipy.spatial import cKDTree

    from geocells.data import Dataset
    from geocells.synth.world import World

    root, cfg = panorama_world
    dataset = Dataset.open(root)
    train, val = dataset.manifest.split("train"), dataset.manifest.split("val")
    assert len(train) > 50 and (train.fov == 360).all() and (train.heading == 0).all()
    assert (val.fov == 90).all()
    assert Image.open(train.path[0]).size == (64, 32)
    world = World(cfg)
    x, y = world.to_xy(train.lat, train.lon)
    tree = cKDTree(np.stack([x, y], 1))
    pair_dist, _ = tree.query(np.stack([x, y], 1), k=2)
    assert pair_dist[:, 1].min() >= 15.0 - 1e-6  # no two captures closer than the spacing
    vx, vy = world.to_xy(val.lat, val.lon)
    assert tree.query(np.stack([vx, vy], 1))[0].min() >= 4.0


def test_training_batches_are_crops_of_panoramas(panorama_world):
    from geocells.data import Dataset
    from geocells.geo import cover_region
    from geocells.models import PrototypeTable
    from geocells.train.config import experiment_config
    from geocells.train.sampling import BatchLoader, TrainPool, plan_epoch

    dataset = Dataset.open(panorama_world[0])
    train_cfg = experiment_config("tiny", ["train.batch_size=8", "data.pano_fov_deg=[85,95]"])
    level = train_cfg.data.prototype_level
    cells = np.concatenate(list(cover_region(dataset.region, level)))
    table = PrototypeTable(cells, level=level, dim=8)
    pool = TrainPool.build(dataset, table, train_cfg)
    assert pool.panorama.all()
    plan = plan_epoch(pool, table, train_cfg, epoch=0)
    first = plan[0]
    assert ((first["crop_fov"] >= 85) & (first["crop_fov"] <= 95)).all()
    assert len(np.unique(first["crop_heading"])) == len(first["ground"])
    size = train_cfg.model.input_size
    batch = BatchLoader(pool, plan, dataset, (size, size), train_cfg)[0]
    assert batch["ground"].shape[1:] == (size, size, 3)
    # Sample 0 of the batch is the crop the plan asked for (when its aerial crop existed).
    index = int(first["ground"][0])
    expected = perspective_crop(load_panorama(pool.paths[index]), first["crop_heading"][0],
                                first["crop_fov"][0], first["crop_pitch"][0], size)  # fmt: skip
    got = batch["ground"][0].numpy()
    assert batch["skipped"] > 0 or np.array_equal(got, expected)


def test_embed_files_embeds_a_panorama_as_its_mean_crop(tmp_path):
    from geocells.models import Encoder
    from geocells.models.embed import PANORAMA_CROPS
    from geocells.train.config import experiment_config

    cfg = experiment_config("tiny")
    encoder = Encoder(cfg.model, cfg.model.input_size)
    size = encoder.input_size
    pano = compass_panorama(64, pano_heading=30.0)
    Image.fromarray(pano).save(tmp_path / "pano.png")
    Image.fromarray(pano[:, :100]).save(tmp_path / "bad.png")  # not 2:1
    view = np.full((40, 40, 3), 120, np.uint8)
    Image.fromarray(view).save(tmp_path / "view.png")
    paths = [str(tmp_path / name) for name in ("pano.png", "view.png", "bad.png")]
    embedded = encoder.embed_files(
        paths, fov=np.array([360.0, 90.0, 360.0]), heading=np.array([30.0, np.nan, 0.0])
    )
    assert embedded.kept.tolist() == [0, 1]
    assert embedded.failures[0][0] == 2 and "twice as wide" in embedded.failures[0][1]
    crops = encoder.encode(list(fixed_crops(pano, 30.0, PANORAMA_CROPS, size)))
    mean = crops.mean(0) / np.linalg.norm(crops.mean(0))
    np.testing.assert_allclose(embedded.embeddings[0], mean, atol=1e-5)
    np.testing.assert_allclose(embedded.embeddings[1], encoder.encode([view])[0], atol=1e-5)


def test_dataset_check_reports_a_panorama_that_is_not_2_to_1(tmp_path):
    from geocells.data.check import check_images
    from geocells.data.manifest import GroundManifest

    Image.fromarray(compass_panorama(16)).save(tmp_path / "good.jpg")
    Image.fromarray(np.zeros((16, 40, 3), np.uint8)).save(tmp_path / "bad.jpg")
    Image.fromarray(np.zeros((16, 40, 3), np.uint8)).save(tmp_path / "view.jpg")  # fov 90
    manifest = GroundManifest.from_columns(
        tmp_path, image_id=["good", "bad", "view"], path=["good.jpg", "bad.jpg", "view.jpg"],
        lat=[47.0] * 3, lon=[8.0] * 3, fov=[360.0, 360.0, 90.0], split=["train"] * 3,
    )  # fmt: skip
    report = check_images(manifest, "header")
    assert report["unreadable"] == 1 and report["first"][0].startswith("bad: ")
    assert "40 x 16" in report["first"][0] and "twice as wide" in report["first"][0]
