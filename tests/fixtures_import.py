"""Tiny datasets in their real published layouts, built from generated images."""

import io
import math
import zipfile

import numpy as np
from PIL import Image

VIGOR_CITIES = {"Chicago": (41.88, -87.63), "NewYork": (40.71, -74.0)}
VIGOR_TILE_PX = 64
RED, GREEN, BLUE = (255, 0, 0), (0, 160, 0), (0, 0, 255)


def image_bytes(size=(32, 16), colour=(90, 120, 150), kind="JPEG", exif=None) -> bytes:
    """A small solid image encoded as ``kind``."""
    buffer = io.BytesIO()
    extra = {"exif": exif.tobytes()} if exif is not None else {}
    Image.new("RGB", size, colour).save(buffer, kind, **extra)
    return buffer.getvalue()


def write_image(path, size=(32, 16), colour=(90, 120, 150), kind=None, exif=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = kind or ("PNG" if path.suffix.lower() == ".png" else "JPEG")
    path.write_bytes(image_bytes(size, colour, kind, exif))
    return path


def vigor_metres_per_px(lat: float) -> float:
    """Web-mercator zoom-20 ground resolution, as VIGOR's satellite tiles have."""
    return 2 * math.pi * 6378137.0 / 256 * math.cos(math.radians(lat)) / 2**20


def build_vigor(root, layout="original"):
    """VIGOR with 2 cities x 6 panoramas, 2 satellite tiles per city and split files.

    Even panoramas are same-area train, odd ones test. Tile 0 of each city is green with a
    red 8 x 8 block at rows 20-27, columns 40-47; tile 1, blue, is centred 5 m east of it.
    Returns {"panoramas": {city: [(name, lat, lon)]}, "tiles": {city: [(lat, lon)]}}.
    """
    from geocells.data.aerial.base import metres_per_degree

    expected = {"panoramas": {}, "tiles": {}}
    for city, (lat0, lon0) in VIGOR_CITIES.items():
        if layout == "original":
            panorama_dir, satellite_dir = root / city / "panorama", root / city / "satellite"
        else:  # Sample4Geo's reorganised copy
            panorama_dir, satellite_dir = root / "ground" / city, root / "satellite" / city
        panoramas = []
        for k in range(6):
            lat, lon = lat0 + k * 1e-4, lon0 + k * 1e-4
            name = f"p{k}{city[0]},{lat:.6f},{lon:.6f},.jpg"
            write_image(panorama_dir / name, (32, 16))
            panoramas.append((name, lat, lon))
        _, metres_lon = metres_per_degree(lat0)
        tiles = [(lat0, lon0), (lat0, lon0 + 5.0 / metres_lon)]
        for index, (lat, lon) in enumerate(tiles):
            pixels = np.zeros((VIGOR_TILE_PX, VIGOR_TILE_PX, 3), np.uint8)
            pixels[:] = GREEN if index == 0 else BLUE
            if index == 0:
                pixels[20:28, 40:48] = RED
            satellite_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(satellite_dir / f"satellite_{lat}_{lon}.png")
        sat = f"satellite_{tiles[0][0]}_{tiles[0][1]}.png"
        lines = [" ".join([name] + [sat, "1.5", "-2.5"] * 4) for name, _, _ in panoramas]
        splits = root / "splits" / city
        splits.mkdir(parents=True, exist_ok=True)
        (splits / "same_area_balanced_train.txt").write_text("\n".join(lines[0::2]) + "\n")
        (splits / "same_area_balanced_test.txt").write_text("\n".join(lines[1::2]) + "\n")
        (splits / "pano_label_balanced.txt").write_text("\n".join(lines) + "\n")
        (splits / "satellite_list.txt").write_text(
            "\n".join(f"satellite_{a}_{b}.png" for a, b in tiles) + "\n"
        )
        expected["panoramas"][city] = panoramas
        expected["tiles"][city] = tiles
    return expected


def build_osv5m(root, train=True, test=True, extracted=False):
    """OSV-5M: ``train.csv``/``test.csv`` and ``images/{split}/NN.zip`` shards (members
    ``NN/<id>.jpg``); ``extracted`` puts the train images in folders instead."""
    header = "id,latitude,longitude,thumb_original_url,country,sequence,captured_at\n"
    rows = {"train": [], "test": []}
    if train:
        rows["train"] = [(str(1000 + k), 45 + k / 100, 5 + k / 100) for k in range(20)]
    if test:
        rows["test"] = [("77", -10.0, 120.0), ("88", 1.0, 1.0)]  # 88 has no image
    root.mkdir(parents=True, exist_ok=True)
    for split, items in rows.items():
        if not items:
            continue
        text = "".join(f"{i},{a},{b},,XX,s1,1600000000000\n" for i, a, b in items)
        (root / f"{split}.csv").write_text(header + text)
        folder = root / "images" / split
        folder.mkdir(parents=True, exist_ok=True)
        present = [i for i, _, _ in items if i != "88"]
        for shard in range(2):
            members = present[shard::2]
            if extracted and split == "train":
                for i in members:
                    write_image(folder / f"{shard:02d}" / f"{i}.jpg", colour=(int(i) % 256, 0, 0))
                continue
            with zipfile.ZipFile(folder / f"{shard:02d}.zip", "w") as archive:
                for i in members:
                    archive.writestr(
                        f"{shard:02d}/{i}.jpg", image_bytes(colour=(int(i) % 256, 0, 0))
                    )
    return rows
