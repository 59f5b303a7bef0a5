"""pytorch-grad-cam's ``score_cam`` module path: the same class as ``camkit.compat.gradcam.ScoreCAM``."""

from camkit.compat.gradcam import ScoreCAM as ScoreCAM

__all__ = ["ScoreCAM"]
