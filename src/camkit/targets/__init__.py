"""Targets: which scalar of the model output a map explains.

A target is any callable ``target(output, rows=None) -> Tensor`` returning one scalar per output
row, shape ``(B,)``. ``rows`` says which original sample each output row belongs to (perturbation
methods run many rows per sample); ``None`` means row ``b`` is sample ``b``. The engine
differentiates the sum of these scalars, so per-sample targets cost one backward for the batch.

TorchCAM's per-sample targets (a callable of ONE sample's output returning a scalar tensor, or a
list with one per sample) become one batched target through :class:`SampleTargets`; the
extractors accept both conventions (:func:`as_target` tells them apart).

The targets that subclass :class:`RowwiseTarget` compute each row's scalar from that row alone,
the same way for every row. They therefore work both ways: on a batched output they return
``(B,)``, and on ONE sample's output (e.g. 1-D logits, one detection dict) they return a scalar,
which is how pytorch-grad-cam calls its targets (one per image, see
:mod:`camkit.compat.gradcam`).

Every built-in target finds what it reads in the model's whole output: a tensor, a tuple (its first
tensor), a dict or a Hugging Face ``ModelOutput`` (``logits``; image embeddings for
:class:`ImageTextSimilarityTarget`), and ``output_key=`` names another entry (a key, a tuple
index, or a path of them, see :func:`find_output`).

Example:
    >>> import torch
    >>> ClassTarget([2, 0])(torch.tensor([[0.0, 1.0, 5.0], [3.0, 1.0, 0.0]]))
    tensor([5., 3.])
    >>> ClassifierOutputTarget(2)(torch.tensor([0.0, 1.0, 5.0]))  # one sample's logits
    tensor(5.)
"""

from __future__ import annotations

from camkit.targets._output import batch_size_of as batch_size_of
from camkit.targets._output import describe_output as describe_output
from camkit.targets._output import find_output as find_output
from camkit.targets._output import select_rows as select_rows
from camkit.targets.classification import BinaryClassifierOutputTarget as BinaryClassifierOutputTarget
from camkit.targets.classification import ClassifierOutputReST as ClassifierOutputReST
from camkit.targets.classification import ClassifierOutputSoftmaxTarget as ClassifierOutputSoftmaxTarget
from camkit.targets.classification import ClassifierOutputTarget as ClassifierOutputTarget
from camkit.targets.classification import ClassProbabilityTarget as ClassProbabilityTarget
from camkit.targets.classification import ClassTarget as ClassTarget
from camkit.targets.classification import RowwiseTarget as RowwiseTarget
from camkit.targets.classification import Target as Target
from camkit.targets.classification import logits_of as logits_of
from camkit.targets.dense import FasterRCNNBoxScoreTarget as FasterRCNNBoxScoreTarget
from camkit.targets.dense import SemanticSegmentationTarget as SemanticSegmentationTarget
from camkit.targets.dense import SimilarityToConceptTarget as SimilarityToConceptTarget
from camkit.targets.dense import box_iou as box_iou
from camkit.targets.multimodal import ImageTextSimilarityTarget as ImageTextSimilarityTarget
from camkit.targets.regression import MultiLabelTarget as MultiLabelTarget
from camkit.targets.regression import RegressionTarget as RegressionTarget
from camkit.targets.samples import SampleTargets as SampleTargets
from camkit.targets.samples import as_target as as_target

__all__ = [
    "BinaryClassifierOutputTarget",
    "ClassProbabilityTarget",
    "ClassTarget",
    "ClassifierOutputReST",
    "ClassifierOutputSoftmaxTarget",
    "ClassifierOutputTarget",
    "FasterRCNNBoxScoreTarget",
    "ImageTextSimilarityTarget",
    "MultiLabelTarget",
    "RegressionTarget",
    "RowwiseTarget",
    "SampleTargets",
    "SemanticSegmentationTarget",
    "SimilarityToConceptTarget",
    "Target",
    "as_target",
    "batch_size_of",
    "box_iou",
    "describe_output",
    "find_output",
    "logits_of",
    "select_rows",
]
