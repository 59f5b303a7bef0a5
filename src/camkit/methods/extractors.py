r"""TorchCAM-compatible extractor classes, one per registry method.

Each class fixes the method (and its options) of :class:`camkit.extractor.CAMExtractor`; the math
lives in the registered weight functions. Notation: :math:`A_k(i,j)` is channel ``k`` of the
target layer's activation, :math:`Y^{(c)}` the score of class ``c`` before softmax,
:math:`g_k(i,j) = \partial Y^{(c)} / \partial A_k(i,j)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from camkit.extractor import CAMExtractor
from camkit.layers import LayerSpec
from camkit.methods.activation import resolve_fc_weight

__all__ = [
    "CAM",
    "ISCAM",
    "SSCAM",
    "GradCAM",
    "GradCAMpp",
    "LayerCAM",
    "ScoreCAM",
    "SmoothGradCAMpp",
    "XGradCAM",
]

Shape = Sequence[int]


class CAM(CAMExtractor):
    r"""Class activation map, from "Learning Deep Features for Discriminative Localization" (Zhou et al., CVPR 2016).

    .. math:: L^{(c)}_{CAM}(x, y) = \mathrm{ReLU}\Big(\sum_k w_k^{(c)} A_k(x, y)\Big)

    where :math:`w_k^{(c)}` is the weight of the fully connected head for class ``c`` and unit ``k``.
    The head is found automatically when the model has exactly one ``nn.Linear``; a Conv1x1 head
    can be named. Unlike TorchCAM 0.5 the documented ReLU is applied. ``scores`` are not needed.

    Args:
        model: input model.
        target_layer: the layer (or its name) feeding global pooling.
        fc_layer: the classification head (or its name); ``None`` resolves it automatically.
        input_shape: input shape without batch dim, for automatic layer choice.
        **kwargs: passed to :class:`~camkit.extractor.CAMExtractor`.

    Example:
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> with CAM(model, "layer4", "fc") as extractor:
        ...     with torch.inference_mode():
        ...         out = model(torch.rand(1, 3, 224, 224))
        ...     cams = extractor(class_idx=100)
        >>> cams[0].shape
        torch.Size([1, 7, 7])
    """

    method = "cam"

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        fc_layer: nn.Module | str | None = None,
        input_shape: Shape = (3, 224, 224),
        **kwargs: Any,
    ) -> None:
        if isinstance(target_layer, (list, tuple)) and len(target_layer) > 1:
            raise ValueError("CAM supports one target layer (the one before global pooling); pass a single layer")
        kwargs.setdefault("fc_weight", resolve_fc_weight(model, fc_layer))
        super().__init__(model, target_layer, input_shape, **kwargs)


class GradCAM(CAMExtractor):
    r"""Grad-CAM, from "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization".

    .. math::
        L^{(c)}_{Grad-CAM}(x, y) = \mathrm{ReLU}\Big(\sum_k w_k^{(c)} A_k(x, y)\Big), \qquad
        w_k^{(c)} = \frac{1}{H W} \sum_{i,j} \frac{\partial Y^{(c)}}{\partial A_k(i, j)}

    Selvaraju et al., ICCV 2017.

    Args:
        model: input model.
        target_layer: layer(s) to explain, by module or name; ``None`` picks one automatically.
        input_shape: input shape without batch dim, for automatic layer choice.
        **kwargs: passed to :class:`~camkit.extractor.CAMExtractor`.

    Example:
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> with GradCAM(model, "layer4") as extractor:
        ...     scores = model(torch.rand(2, 3, 224, 224))
        ...     cams = extractor([1, 2], scores)
        >>> cams[0].shape
        torch.Size([2, 7, 7])
    """

    method = "gradcam"

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        input_shape: Shape = (3, 224, 224),
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layer, input_shape, **kwargs)


class GradCAMpp(GradCAM):
    r"""Grad-CAM++, from "Grad-CAM++: Improved Visual Explanations for Deep Convolutional Networks".

    .. math::
        w_k^{(c)} = \sum_{i,j} \alpha_k^{(c)}(i, j)\, \mathrm{ReLU}\big(g_k(i,j)\big), \qquad
        \alpha_k^{(c)}(i, j) = \frac{g_k(i,j)^2}{2\, g_k(i,j)^2 + \sum_{a,b} A_k(a,b)\, g_k(i,j)^3}

    with :math:`\alpha = 0` where :math:`g = 0` (higher derivatives taken as powers of the gradient,
    the exponential-output assumption of the paper), and the map :math:`\mathrm{ReLU}(\sum_k w_k A_k)`.
    TorchCAM 0.5 never applies the alpha denominator (a bug); camkit applies the documented
    formula, as pytorch-grad-cam does. Chattopadhay et al., WACV 2018.

    Args:
        model: input model.
        target_layer: layer(s) to explain, by module or name; ``None`` picks one automatically.
        input_shape: input shape without batch dim, for automatic layer choice.
        **kwargs: passed to :class:`~camkit.extractor.CAMExtractor`.

    Example:
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> with GradCAMpp(model, "layer4") as extractor:
        ...     cams = extractor(100, model(torch.rand(1, 3, 224, 224)))
    """

    method = "gradcampp"


class XGradCAM(GradCAM):
    r"""XGrad-CAM, from "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs".

    .. math::
        w_k^{(c)} = \sum_{i,j} g_k(i,j) \frac{A_k(i, j)}{\sum_{m,n} A_k(m, n)}

    and the map :math:`\mathrm{ReLU}(\sum_k w_k A_k)`; a channel whose activations sum to 0 gets
    weight 0. Fu et al., BMVC 2020.

    Args:
        model: input model.
        target_layer: layer(s) to explain, by module or name; ``None`` picks one automatically.
        input_shape: input shape without batch dim, for automatic layer choice.
        **kwargs: passed to :class:`~camkit.extractor.CAMExtractor`.

    Example:
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> with XGradCAM(model, "layer4") as extractor:
        ...     cams = extractor(100, model(torch.rand(1, 3, 224, 224)))
    """

    method = "xgradcam"


class LayerCAM(GradCAM):
    r"""LayerCAM, from "LayerCAM: Exploring Hierarchical Class Activation Maps for Localization".

    .. math::
        L^{(c)}(x, y) = \mathrm{ReLU}\Big(\sum_k \mathrm{ReLU}\big(g_k(x,y)\big) A_k(x, y)\Big)

    :meth:`fuse_cams` scales each map by :math:`\tanh(2 L)` (eq. 9 of the paper) before the
    element-wise maximum. Jiang et al., IEEE TIP 2021.

    Args:
        model: input model.
        target_layer: layer(s) to explain, by module or name; ``None`` picks one automatically.
        input_shape: input shape without batch dim, for automatic layer choice.
        **kwargs: passed to :class:`~camkit.extractor.CAMExtractor`.

    Example:
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> with LayerCAM(model, ["layer3", "layer4"]) as extractor:
        ...     cams = extractor(100, model(torch.rand(1, 3, 224, 224)))
        ...     fused = extractor.fuse_cams(cams)
        >>> fused.shape
        torch.Size([1, 14, 14])
    """

    method = "layercam"

    @staticmethod
    def _scale_cams(cams: list[Tensor], gamma: float = 2.0) -> list[Tensor]:
        return [torch.tanh(gamma * cam) for cam in cams]


class SmoothGradCAMpp(CAMExtractor):
    r"""Smooth Grad-CAM++, from "Smooth Grad-CAM++: An Enhanced Inference Level Visualization Technique".

    .. math::
        \alpha_k^{(c)}(i, j) = \frac{D^{(2)}_k(i,j)}{2 D^{(2)}_k(i,j) + \sum_{a,b} A_k(a,b) D^{(3)}_k(i,j)},
        \qquad w_k^{(c)} = \sum_{i,j} \alpha_k^{(c)}(i, j)\, \mathrm{ReLU}\big(D^{(1)}_k(i,j)\big)

    where :math:`D^{(p)} = \frac{1}{n}\sum_{m=1}^n g_m^p` averages the p-th power of the gradient
    over ``num_samples`` copies of the input with Gaussian noise of standard deviation ``std`` (run
    by camkit in eval mode, ``batch_size`` copies per forward), and :math:`A` is the activation of
    the clean input. TorchCAM 0.5 uses the last noisy sample's activation and gradient instead.
    ``scores`` are not needed. Omeiza et al., 2019.

    Args:
        model: input model.
        target_layer: layer(s) to explain, by module or name; ``None`` picks one automatically.
        num_samples: number of noisy copies.
        std: standard deviation of the noise, in input units.
        input_shape: input shape without batch dim, for automatic layer choice.
        **kwargs: passed to :class:`~camkit.extractor.CAMExtractor` (``generator=`` for reproducible noise).

    Example:
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> with SmoothGradCAMpp(model, "layer4", num_samples=2) as extractor:
        ...     _ = model(torch.rand(1, 3, 224, 224))
        ...     cams = extractor(100)
    """

    method = "smoothgradcampp"

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        num_samples: int = 4,
        std: float = 0.3,
        input_shape: Shape = (3, 224, 224),
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layer, input_shape, num_samples=num_samples, std=std, **kwargs)
        self.num_samples = num_samples
        self.std = std


class ScoreCAM(CAMExtractor):
    r"""Score-CAM, from "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks".

    .. math::
        L^{(c)}(x, y) = \mathrm{ReLU}\Big(\sum_k w_k^{(c)} A_k(x, y)\Big), \qquad
        w_k^{(c)} = \mathrm{softmax}_k\Big(Y^{(c)}(M_k \odot X) - Y^{(c)}(X)\Big), \qquad
        M_k = U\Big(\frac{A_k - \min A_k}{\max A_k - \min A_k}\Big)

    where :math:`U` upsamples (bilinear) to the input size and :math:`X` is the input of the last
    forward (the baseline of the seed formula). Masked inputs run in eval mode under
    ``inference_mode``, ``batch_size`` per forward. Wang et al., CVPR Workshops 2020.

    Args:
        model: input model.
        target_layer: layer(s) to explain, by module or name; ``None`` picks one automatically.
        batch_size: masked inputs per forward.
        input_shape: input shape without batch dim, for automatic layer choice.
        **kwargs: passed to :class:`~camkit.extractor.CAMExtractor`.

    Example:
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> with ScoreCAM(model, "layer4", batch_size=64) as extractor:
        ...     with torch.inference_mode():
        ...         _ = model(torch.rand(1, 3, 32, 32))
        ...     cams = extractor(class_idx=100)
    """

    method = "scorecam"

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        batch_size: int = 32,
        input_shape: Shape = (3, 224, 224),
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layer, input_shape, batch_size=batch_size, **kwargs)
        self.bs = batch_size


class SSCAM(ScoreCAM):
    r"""SS-CAM, from "SS-CAM: Smoothed Score-CAM for Sharper Visual Feature Localization".

    .. math::
        w_k^{(c)} = \mathrm{softmax}_k\Big(\frac{1}{N} \sum_{i=1}^N
        \big(Y^{(c)}((M_k + \delta_i) \odot X) - Y^{(c)}(X)\big)\Big),
        \qquad \delta_i \sim \mathcal{N}(0, \sigma^2)

    with :math:`M_k` as in :class:`ScoreCAM` and noise drawn per input pixel (pass
    ``generator=torch.Generator().manual_seed(0)`` for reproducible maps). Wang et al., 2020.

    Args:
        model: input model.
        target_layer: layer(s) to explain, by module or name; ``None`` picks one automatically.
        batch_size: masked inputs per forward.
        num_samples: number of noisy masks per channel.
        std: standard deviation :math:`\sigma` of the noise.
        input_shape: input shape without batch dim, for automatic layer choice.
        **kwargs: passed to :class:`~camkit.extractor.CAMExtractor`.

    Example:
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> with SSCAM(model, "layer4", num_samples=2, batch_size=128) as extractor:
        ...     _ = model(torch.rand(1, 3, 32, 32))
        ...     cams = extractor(class_idx=100)
    """

    method = "sscam"

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        batch_size: int = 32,
        num_samples: int = 35,
        std: float = 2.0,
        input_shape: Shape = (3, 224, 224),
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layer, batch_size, input_shape, num_samples=num_samples, std=std, **kwargs)
        self.num_samples = num_samples
        self.std = std


class ISCAM(ScoreCAM):
    r"""IS-CAM, from "IS-CAM: Integrated Score-CAM for axiomatic-based explanations".

    .. math::
        w_k^{(c)} = \mathrm{softmax}_k\Big(\frac{1}{N} \sum_{i=1}^N \big(Y^{(c)}(M_i \odot X) - Y^{(c)}(X)\big)\Big),
        \qquad M_i = \sum_{j=0}^{i-1} \frac{j}{N} M_k

    with :math:`M_k` as in :class:`ScoreCAM`: the mask strength of sample ``i`` is
    :math:`i(i-1)/(2N)`, as in the documented formula (TorchCAM 0.5's loop is shifted by one
    sample and reaches :math:`(N+1)/2`). Naidu et al., 2020.

    Args:
        model: input model.
        target_layer: layer(s) to explain, by module or name; ``None`` picks one automatically.
        batch_size: masked inputs per forward.
        num_samples: number of integration steps.
        input_shape: input shape without batch dim, for automatic layer choice.
        **kwargs: passed to :class:`~camkit.extractor.CAMExtractor`.

    Example:
        >>> from torchvision.models import resnet18
        >>> model = resnet18().eval()
        >>> with ISCAM(model, "layer4", num_samples=2, batch_size=128) as extractor:
        ...     _ = model(torch.rand(1, 3, 32, 32))
        ...     cams = extractor(class_idx=100)
    """

    method = "iscam"

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        batch_size: int = 32,
        num_samples: int = 10,
        input_shape: Shape = (3, 224, 224),
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layer, batch_size, input_shape, num_samples=num_samples, **kwargs)
        self.num_samples = num_samples
