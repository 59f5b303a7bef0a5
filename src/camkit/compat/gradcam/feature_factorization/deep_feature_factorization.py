"""pytorch-grad-cam's ``feature_factorization.deep_feature_factorization`` module path."""

from camkit.compat.gradcam import DeepFeatureFactorization as DeepFeatureFactorization

__all__ = ["DeepFeatureFactorization"]
