"""Per-capture conditions (sun, season, white balance, haze, noise) and colour finishing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geocells.synth.config import CampaignConfig


@dataclass(frozen=True)
class Capture:
    """The conditions of one image: sun direction and strength, season, camera colour."""

    sun_azimuth: float  # radians, maths convention (0 = east, counter-clockwise)
    sun_elevation: float  # radians
    intensity: float
    season: float
    white_balance: tuple[float, float, float]
    noise_sigma: float
    haze: float
    seed: int  # seeds the sensor noise

    @property
    def sun_dir(self) -> np.ndarray:
        """Horizontal unit vector towards the sun (x east, y north)."""
        return np.array([np.cos(self.sun_azimuth), np.sin(self.sun_azimuth)])


def per_view(captures: list[Capture], name: str) -> np.ndarray:
    """One attribute of each capture of a batch of views: float64 [B]."""
    return np.array([getattr(c, name) for c in captures], np.float64)


def sample_capture(campaign: CampaignConfig, rng: np.random.Generator) -> Capture:
    """Draw the conditions of one capture of ``campaign``."""
    lo, hi = campaign.sun_elevation_deg
    gains = 1.0 + rng.uniform(-campaign.white_balance, campaign.white_balance, 3)
    return Capture(
        # The sun stands in the southern half of the sky (northern hemisphere).
        sun_azimuth=float(np.deg2rad(rng.uniform(-160.0, -20.0))),
        sun_elevation=float(np.deg2rad(rng.uniform(lo, hi))),
        intensity=float(rng.uniform(*campaign.sun_intensity)),
        season=float(np.clip(campaign.season + rng.uniform(-1, 1) * campaign.season_jitter, 0, 1)),
        white_balance=(float(gains[0]), float(gains[1]), float(gains[2])),
        noise_sigma=float(campaign.noise_sigma),
        haze=float(rng.uniform(*campaign.haze)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def campaign_capture(campaign: CampaignConfig, seed: int) -> Capture:
    """The single fixed capture of a campaign (used for the aerial orthophoto)."""
    return sample_capture(campaign, np.random.default_rng([seed, 7]))


def finish(rgb: np.ndarray, capture: Capture, noise: np.ndarray) -> np.ndarray:
    """White balance, sensor noise, gamma and quantisation: float [..., 3] -> uint8."""
    out = rgb * np.asarray(capture.white_balance, np.float32)
    out = out + noise * capture.noise_sigma
    out = np.clip(out, 0.0, 1.0) ** (1 / 1.15)
    return (out * 255.0 + 0.5).astype(np.uint8)
