"""Every building its own: material, colours, windows, shop front and roof per building.

A building's look is a pure function of its key (``Layout.building_key``) with the country
style as a prior, so the same building looks the same in every capture campaign and from
the air (its roof colour), while neighbours differ as real ones do. Colours are linear RGB
in [0, 1], unlit.
"""

from __future__ import annotations

import numpy as np

from geocells.synth import styles as S
from geocells.synth.noise import hash_ints, hash_units

PLASTER, BRICK, STONE, WOOD, PANEL, TIMBER = range(6)
# Probability of each material per style (plaster, brick, stone, wood, glass/metal panels,
# half-timbering).
MATERIAL_P = np.array(
    [
        [0.40, 0.05, 0.15, 0.20, 0.00, 0.20],  # alpine
        [0.35, 0.15, 0.05, 0.40, 0.00, 0.05],  # nordic
        [0.75, 0.05, 0.20, 0.00, 0.00, 0.00],  # mediterranean
        [0.15, 0.55, 0.10, 0.00, 0.05, 0.15],  # brick
        [0.35, 0.05, 0.10, 0.00, 0.50, 0.00],  # modern
        [0.50, 0.20, 0.05, 0.05, 0.10, 0.10],  # eastern
    ],
    np.float32,
)
# Material colour ranges: hue centre, hue spread, saturation (lo, hi), value (lo, hi).
MATERIAL_HSV = np.array(
    [
        [0.00, 0.00, 0.00, 0.00, 0.00, 0.00],  # plaster: from the style's hues
        [0.025, 0.04, 0.45, 0.75, 0.30, 0.55],  # brick
        [0.10, 0.04, 0.05, 0.25, 0.55, 0.85],  # stone
        [0.07, 0.04, 0.35, 0.65, 0.25, 0.55],  # wood
        [0.58, 0.08, 0.05, 0.30, 0.35, 0.70],  # panels
        [0.12, 0.06, 0.05, 0.25, 0.80, 0.95],  # half-timbering: light infill
    ],
    np.float32,
)
# Roof palettes of pitched roofs (HSV): terracotta, brown tiles, slate, black, copper green.
ROOF_HSV = np.array(
    [[0.03, 0.65, 0.60], [0.06, 0.55, 0.38], [0.60, 0.12, 0.35], [0.0, 0.0, 0.16],
     [0.42, 0.35, 0.50]],
    np.float32,
)  # fmt: skip
# Which roof palettes a style uses (probabilities).
ROOF_P = np.array(
    [
        [0.25, 0.40, 0.25, 0.10, 0.00],
        [0.30, 0.10, 0.30, 0.25, 0.05],
        [0.80, 0.15, 0.00, 0.00, 0.05],
        [0.35, 0.25, 0.30, 0.10, 0.00],
        [0.10, 0.10, 0.40, 0.40, 0.00],
        [0.40, 0.20, 0.20, 0.10, 0.10],
    ],
    np.float32,
)
# Share of urban ground floors that are shops (awning, big windows), per style.
SHOP_SHARE = np.array([0.35, 0.30, 0.55, 0.45, 0.40, 0.35], np.float32)
TRIMS = np.array(
    [[0.95, 0.95, 0.92], [0.15, 0.15, 0.16], [0.20, 0.40, 0.25], [0.55, 0.20, 0.15],
     [0.25, 0.30, 0.55], [0.80, 0.70, 0.45]],
    np.float32,
)  # fmt: skip


def _choose(probabilities: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index drawn from each row of ``probabilities`` [N, K] with uniforms ``u`` [N]."""
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative /= cumulative[:, -1:]
    return np.minimum((u[:, None] > cumulative).sum(axis=1), probabilities.shape[1] - 1)


def building_look(seed: int, key: np.ndarray, style: np.ndarray, urban: np.ndarray) -> dict:
    """Appearance of the buildings ``key`` [N] (uint64) of country ``style`` [N]; ``urban``
    marks perimeter-block buildings (which may have shop fronts). Arrays of length N."""
    key, style = np.asarray(key, np.uint64), np.asarray(style, np.int64)
    r_mat, r_hue, r_sat, r_val = hash_units(seed, 241, key)
    r_free, r_trim, r_roof, r_roof_tone = hash_units(seed, 242, key)
    r_spacing, r_width, r_height, r_glass = hash_units(seed, 243, key)
    r_shop, r_awning, r_stripes, r_shutter = hash_units(seed, 244, key)
    material = _choose(MATERIAL_P[style], r_mat)
    # Plaster: one of the style's hues, or (one building in five) any hue at all.
    pick = (hash_ints(seed, 245, key) % np.uint64(3)).astype(np.int64)
    plaster_hue = np.where(r_free < 0.2, r_hue, S.FACADE_HUES[style, pick] + 0.1 * (r_hue - 0.5))
    sat_lo, sat_hi = S.FACADE_SAT[style, 0], S.FACADE_SAT[style, 1]
    val_lo, val_hi = S.FACADE_VAL[style, 0], S.FACADE_VAL[style, 1]
    m = MATERIAL_HSV[material]
    plaster = material == PLASTER
    hue = np.where(plaster, plaster_hue, m[:, 0] + m[:, 1] * (r_hue - 0.5))
    sat = np.where(
        plaster, sat_lo + (sat_hi - sat_lo) * r_sat, m[:, 2] + (m[:, 3] - m[:, 2]) * r_sat
    )
    val = np.where(
        plaster, val_lo + (val_hi - val_lo) * r_val, m[:, 4] + (m[:, 5] - m[:, 4]) * r_val
    )
    roof_kind = _choose(ROOF_P[style], r_roof)
    roof = ROOF_HSV[roof_kind]
    flat_roof = S.hsv_to_rgb(hue + S.ROOF_HUE_SHIFT[style],
                             S.ROOF_SAT[style, 0] + S.ROOF_SAT[style, 1] * sat,
                             S.ROOF_VAL[style, 0] + S.ROOF_VAL[style, 1] * val)  # fmt: skip
    lo, hi = S.WINDOW_SPACING[style, 0], S.WINDOW_SPACING[style, 1]
    panel = material == PANEL
    return {
        "material": material,
        "facade": S.hsv_to_rgb(hue, sat, val),
        "trim": TRIMS[(hash_ints(seed, 246, key) % np.uint64(len(TRIMS))).astype(np.int64)],
        "pitched_roof": S.hsv_to_rgb(
            roof[:, 0], roof[:, 1], roof[:, 2] * (0.8 + 0.4 * r_roof_tone)
        ),
        "flat_roof": flat_roof,
        "spacing": (lo + (hi - lo) * r_spacing).astype(np.float32),
        "width": np.where(panel, 0.85, S.WINDOW_W[style, 0]
                          + (S.WINDOW_W[style, 1] - S.WINDOW_W[style, 0]) * r_width),
        "height": np.where(panel, 0.8, S.WINDOW_H[style, 0]
                           + (S.WINDOW_H[style, 1] - S.WINDOW_H[style, 0]) * r_height),
        "glass": S.WINDOW_VAL[style] * (0.6 + 0.8 * r_glass),
        "floor": S.FLOOR_HEIGHT[style] * (0.92 + 0.16 * r_spacing),
        "shop": np.asarray(urban, bool) & (r_shop < SHOP_SHARE[style]),
        "awning": S.hsv_to_rgb(r_awning, 0.55 + 0.35 * r_stripes, 0.45 + 0.4 * r_trim),
        "stripes": r_stripes < 0.4,
        "shutters": (r_shutter < 0.35) & ~panel,
        **_decor(seed, key, panel),
    }  # fmt: skip


def texture(material: np.ndarray, s: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Brightness factor of the material's pattern at wall coordinates (``s`` along the
    wall, ``z`` up, metres; broadcast together): brick courses, stone blocks, wood planks."""
    shape = np.broadcast_shapes(material.shape, s.shape, z.shape)
    out = np.ones(shape, np.float32)
    course = np.floor(z / 0.6)
    joint = np.mod(s / 1.2 + 0.5 * course, 1.0) < 0.08
    stone = (np.mod(z, 0.6) < 0.08) | joint
    out = np.where(material == STONE, np.where(stone, 0.78, 1.0), out)
    brick = np.mod(z, 0.3) < 0.06
    out = np.where(material == BRICK, np.where(brick, 0.82, 1.0), out)
    plank = np.mod(z, 0.35) < 0.07
    out = np.where(material == WOOD, np.where(plank, 0.7, 1.0), out)
    # Half-timbering: dark posts, rails at each storey and braces across each panel.
    panel_s, panel_z = np.mod(s, 1.6), np.mod(z, 2.9)
    brace = np.abs(panel_s / 1.6 - panel_z / 2.9) < 0.09
    beam = (panel_s < 0.22) | (panel_z < 0.25) | brace
    out = np.where(material == TIMBER, np.where(beam, 0.25, 1.0), out)
    return out.astype(np.float32)


def _decor(seed: int, key: np.ndarray, panel: np.ndarray) -> dict:
    """Per building: window frames and arches, balconies, a shop sign with an abstract logo
    (no text), and on a few blank walls a large mural of stripes or rings."""
    r_frame, r_arch, r_balcony, r_mural = hash_units(seed, 247, key)
    r_logo, r_logo_x, r_logo_f, r_mural_f = hash_units(seed, 248, key)
    r_c1, r_c2, r_c3, r_angle = hash_units(seed, 249, key)
    return {
        "frames": (r_frame < 0.6) & ~panel,
        "arched": (r_arch < 0.25) & ~panel,
        "balconies": (r_balcony < 0.3) & ~panel,
        "sign": S.hsv_to_rgb(r_c1, 0.3 + 0.6 * r_c2, 0.3 + 0.6 * r_c3),
        "logo": S.hsv_to_rgb(r_c2 + 0.5, 0.7, 0.95 - 0.6 * r_c1),
        "logo_kind": (r_logo * 4).astype(np.int64),  # disc, stripes, diamond, chevron
        "logo_s": 0.5 + 3.0 * r_logo_x,  # logo centre along the sign (m)
        "logo_f": 1.5 + 4.0 * r_logo_f,  # stripe frequency (1/m)
        "mural": r_mural < 0.08,
        "mural_f": 0.15 + 0.5 * r_mural_f,
        "mural_angle": r_angle * np.pi,
        "mural_rgb": S.hsv_to_rgb(r_c3, 0.75, 0.85),
    }


def sign_pattern(look_col, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where a sign shows its logo, at sign coordinates (``s`` along the wall, ``v`` in
    [0, 1] across the sign height); ``look_col`` gives per-column attributes."""
    ds = s - look_col("logo_s")
    dv = (v - 0.5) * 0.9  # the sign is ~0.9 m high
    kind = look_col("logo_kind")
    disc = ds**2 + dv**2 < 0.16
    stripes = (np.mod(s * look_col("logo_f"), 1.0) < 0.35) & (np.abs(ds) < 1.4)
    diamond = np.abs(ds) + np.abs(dv) < 0.42
    chevron = (np.abs(np.abs(ds) - (dv + 0.45)) < 0.12) & (np.abs(ds) < 0.6)
    return np.select([kind == 0, kind == 1, kind == 2], [disc, stripes, diamond], chevron)


def mural_pattern(look_col, s: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Large painted stripes (or rings) over a wall, oriented per building."""
    angle = look_col("mural_angle")
    u = s * np.cos(angle) + z * np.sin(angle)
    rings = np.mod(np.hypot(np.mod(s, 14.0) - 7.0, z - 6.0) * look_col("mural_f"), 1.0) < 0.5
    stripes = np.mod(u * look_col("mural_f"), 1.0) < 0.5
    return np.where(look_col("mural_f") > 0.4, rings, stripes)
