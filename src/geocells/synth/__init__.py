"""geocells.synth: a procedural world over real lat/lon, its renderers and dataset export.

``run(cfg, out)`` writes a complete ``dataset/``; ``World``, ``AerialRenderer`` and
``StreetRenderer`` give direct access to the world and its views.
"""

from geocells.synth.config import CampaignConfig, SynthConfig


def run(cfg: SynthConfig, out, *, overwrite: bool = False, progress: bool = True):
    """Write the synthetic dataset for ``cfg`` into ``out`` (see ``geocells.synth.export``)."""
    from geocells.synth.export import run as _run

    return _run(cfg, out, overwrite=overwrite, progress=progress)


__all__ = ["CampaignConfig", "SynthConfig", "run"]
