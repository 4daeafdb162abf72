"""``SynthConfig``: every knob of the synthetic world, its captures and the dataset export."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CampaignConfig:
    """One capture campaign: the range of lighting, season and camera colour it covers."""

    name: str = "summer"
    date: str = "2024-06-15"  # captured_at prefix; the day varies per capture
    season: float = 0.0  # 0 = summer greens, 1 = autumn browns
    season_jitter: float = 0.15
    sun_elevation_deg: tuple[float, float] = (35.0, 65.0)
    sun_intensity: tuple[float, float] = (0.85, 1.15)
    white_balance: float = 0.06  # max relative per-channel gain change
    noise_sigma: float = 0.015  # per-pixel Gaussian noise (fraction of full scale)
    haze: tuple[float, float] = (0.0, 0.3)  # extra atmospheric haze


@dataclass
class SynthConfig:
    """The synthetic continent: world layout, renderers, coverage and dataset size."""

    seed: int = 0
    center_lat: float = 46.95
    center_lon: float = 7.45
    size_km: float = 10.5  # edge of the square region
    margin_m: float = 320.0  # aerial coverage beyond the region on each side
    # World layout.
    country_km: float = 4.0  # spacing of country seeds
    town_spacing_km: float = 1.6  # spacing of town seeds
    town_probability: float = 0.75
    town_radius_m: tuple[float, float] = (250.0, 900.0)
    rural_road_spacing_m: float = 650.0
    forest_threshold: float = 0.58  # higher = less forest
    water_threshold: float = 0.70  # higher = less water
    relief_m: float = 420.0  # terrain: lowest to highest ground (skyline and hillshade); 0 = flat
    # Renderers.
    gsd_m: float = 1.2  # aerial ground sampling distance (m/px)
    aerial_chunk_px: int = 512
    image_size: int = 128  # ground views are square image_size x image_size
    fov_deg: float = 90.0
    camera_height_m: float = 2.5
    max_view_m: float = 450.0
    jpeg_quality: int = 90
    aerial_campaign: CampaignConfig = field(
        default_factory=lambda: CampaignConfig(
            name="aerial", date="2024-07-01", season=0.1, season_jitter=0.0,
            sun_elevation_deg=(50.0, 50.0), sun_intensity=(1.0, 1.0), noise_sigma=0.01,
            white_balance=0.0, haze=(0.0, 0.0),
        )
    )  # fmt: skip
    train_campaign: CampaignConfig = field(default_factory=CampaignConfig)
    test_campaign: CampaignConfig = field(
        default_factory=lambda: CampaignConfig(
            name="autumn", date="2025-10-10", season=0.7, sun_elevation_deg=(18.0, 40.0),
            sun_intensity=(0.7, 1.0), white_balance=0.08, haze=(0.1, 0.45),
        )
    )  # fmt: skip
    # Coverage and splits.
    # Training campaign: "panorama" (Street View-like drives: an equirectangular panorama,
    # panorama_height x 2 panorama_height, every capture_spacing_m on town roads and every
    # rural_capture_spacing_m on rural roads; n_train > 0 caps their number) or
    # "perspective" (n_train single views at random road points, random headings).
    train_capture: str = "perspective"
    panorama_height: int = 128
    capture_spacing_m: float = 10.0
    rural_capture_spacing_m: float = 40.0
    n_train: int = 12000
    n_val: int = 1000
    n_test: int = 2000
    town_capture_weight: float = 1.0  # relative capture density on town roads
    rural_capture_weight: float = 0.1  # ... and on rural roads
    gap_scale_m: float = 900.0  # size of the patches never driven by the training campaign
    gap_share: float = 0.2  # share of the area in such patches
    min_query_distance_m: float = 10.0  # val/test queries at least this far from train
    workers: int = 2
