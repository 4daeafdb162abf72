"""Contact sheet of a dataset: aerial tiles next to ground views taken inside them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from geocells.geo import haversine_m

log = logging.getLogger(__name__)
TILE_M = 154.0


def _pick_tiles(dataset, rows: int, per_row: int, seed: int) -> list[np.ndarray]:
    """Groups of ground images lying close together, spread over countries and land cover."""
    manifest = dataset.manifest
    lat, lon = manifest.lat, manifest.lon
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lat))
    styles = _styles(dataset, lat, lon)
    groups, used_styles, taken = [], [], np.zeros(len(lat), bool)
    for want_new_style in (True, False):
        for i in order:
            if len(groups) >= rows or taken[i]:
                continue
            if want_new_style and styles[i] in used_styles:
                continue
            near = np.flatnonzero(haversine_m(lat[i], lon[i], lat, lon) < TILE_M * 0.4)
            if len(near) < per_row:
                continue
            group = near[np.argsort(haversine_m(lat[i], lon[i], lat[near], lon[near]))][:per_row]
            groups.append(group)
            used_styles.append(styles[i])
            taken[near] = True
    return groups


def _styles(dataset, lat, lon) -> np.ndarray:
    """Country style per image for synthetic datasets (all equal for real data)."""
    if dataset.world is None:
        return np.zeros(len(lat), int)
    from geocells.config import resolve_config
    from geocells.synth.config import SynthConfig
    from geocells.synth.world import World

    world = World(resolve_config(SynthConfig, dataset.world["config"]))
    x, y = world.to_xy(lat, lon)
    return world.layout(x, y).style


def preview(
    dataset_root: Path, out: Path, rows: int = 6, per_row: int = 4, px: int = 160, seed: int = 0
) -> Path:
    """Write a contact sheet PNG: per row, one aerial tile and ground views inside it."""
    from geocells.data import Dataset, load_image

    dataset = Dataset.open(dataset_root)
    groups = _pick_tiles(dataset, rows, per_row, seed)
    if not groups:
        raise ValueError(f"{dataset_root}: no {TILE_M:.0f} m tile holds {per_row} ground images")
    manifest = dataset.manifest
    gap = 4
    sheet = Image.new(
        "RGB", ((per_row + 1) * (px + gap) + gap, len(groups) * (px + gap) + gap), "white"
    )
    for r, group in enumerate(groups):
        clat, clon = float(manifest.lat[group].mean()), float(manifest.lon[group].mean())
        tile = Image.fromarray(dataset.aerial.crop(clat, clon, TILE_M, px))
        draw = ImageDraw.Draw(tile)
        for k, i in enumerate(group):
            dy = -float(haversine_m(clat, clon, manifest.lat[i], clon)) * np.sign(
                manifest.lat[i] - clat
            )
            east = float(haversine_m(clat, clon, clat, manifest.lon[i]))
            dx = east * np.sign(manifest.lon[i] - clon)
            cx, cy = px / 2 + dx / TILE_M * px, px / 2 + dy / TILE_M * px
            draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=(255, 40, 40), outline=(0, 0, 0))
            draw.text((cx + 4, cy - 6), str(k + 1), fill=(255, 255, 255))
        top = gap + r * (px + gap)
        sheet.paste(tile, (gap, top))
        for k, i in enumerate(group):
            view = load_image(manifest.path[i]).resize((px, px), Image.BILINEAR)
            ImageDraw.Draw(view).text((3, 2), str(k + 1), fill=(255, 255, 255))
            sheet.paste(view, (gap + (k + 1) * (px + gap), top))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    log.info("preview with %d tiles written to %s", len(groups), out)
    return out


def places(dataset_root: Path, out: Path, rows: int = 6, px: int = 160, seed: int = 0) -> Path:
    """Write a sheet of places of a synthetic dataset: per row the aerial tile, then the same
    place (a training panorama's position) seen at two headings 90° apart in the training
    campaign and in the test campaign: is each place recognisable, and only there?"""
    from geocells.config import resolve_config
    from geocells.data import Dataset
    from geocells.synth.capture import sample_capture
    from geocells.synth.config import SynthConfig
    from geocells.synth.street import StreetRenderer
    from geocells.synth.world import World

    dataset = Dataset.open(dataset_root)
    if dataset.world is None:
        raise ValueError(f"{dataset_root} is not a synthetic dataset (no world.json)")
    cfg = resolve_config(SynthConfig, dataset.world["config"])
    world = World(cfg)
    train = dataset.manifest.split("train")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(train), min(rows, len(train)), replace=False)
    renderer = StreetRenderer(world, cfg.image_size, cfg.fov_deg, cfg.camera_height_m,
                              cfg.max_view_m)  # fmt: skip
    gap = 4
    sheet = Image.new("RGB", (5 * (px + gap) + gap, len(pick) * (px + gap) + gap), "white")
    for r, i in enumerate(pick):
        lat, lon = float(train.lat[i]), float(train.lon[i])
        x, y = world.to_xy(np.array([lat]), np.array([lon]))
        heading = float(rng.uniform(0, 360))
        top = gap + r * (px + gap)
        sheet.paste(Image.fromarray(dataset.aerial.crop(lat, lon, TILE_M, px)), (gap, top))
        column = 1
        for campaign in (cfg.train_campaign, cfg.test_campaign):
            for turn in (0.0, 90.0):
                view = renderer.render(x, y, np.array([heading + turn]),
                                       [sample_capture(campaign, rng)])[0]  # fmt: skip
                tile = Image.fromarray(view).resize((px, px), Image.BILINEAR)
                label = f"{campaign.name} {(heading + turn) % 360:.0f}°"
                ImageDraw.Draw(tile).text((3, 2), label, fill=(255, 255, 255))
                sheet.paste(tile, (gap + column * (px + gap), top))
                column += 1
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    log.info("sheet of %d places written to %s", len(pick), out)
    return out
