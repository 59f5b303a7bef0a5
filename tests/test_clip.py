"""Image–text similarity maps on a small random-init Hugging Face CLIP (no download).

* the target's value is the cosine similarity computed by hand (float64), which is also
  ``logits_per_image`` divided by the model's logit scale;
* Grad-CAM of the similarity against a float64 re-derivation written here with a forward hook: the
  last block's ``layer_norm1`` tokens, class token dropped, read as the 4x4 patch grid;
* two prompts give finite, different maps; one text embedding per image equals one target per image;
* the image side alone (``CLIPVisionModelWithProjection``, a module calling ``get_image_features``)
  with the automatic layer choice and token reshape, and the full ``CLIPModel`` called as
  ``model(**inputs)`` through the TorchCAM-style extractor;
* Score-CAM (re-run rows) and the pytorch-grad-cam front door with the same target.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from transformers import CLIPConfig, CLIPModel, CLIPVisionModelWithProjection

import camkit.compat.gradcam as front
from camkit.methods import GradCAM, ScoreCAM
from camkit.targets import ImageTextSimilarityTarget

DIM = 8  # projection dim: the shared image-text embedding size
GRID = 4  # 32x32 images, 8x8 patches
LAYER = "vision_model.encoder.layers.1.layer_norm1"  # the norm before the last block's attention


def tiny_config() -> CLIPConfig:
    text = {
        "vocab_size": 50,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 12,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 2,
        "projection_dim": DIM,
    }
    vision = {
        "image_size": 32,
        "patch_size": 8,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "projection_dim": DIM,
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=DIM)


@pytest.fixture(scope="module")
def clip() -> CLIPModel:
    torch.manual_seed(0)
    return CLIPModel(tiny_config()).double().eval()


@pytest.fixture(scope="module")
def vision() -> CLIPVisionModelWithProjection:
    torch.manual_seed(1)
    return CLIPVisionModelWithProjection(tiny_config().vision_config).double().eval()


def pixels(n: int = 2) -> Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(4), dtype=torch.float64)


def prompts(n: int = 2) -> Tensor:
    """Token ids of ``n`` prompts of 7 tokens (ending with the eos id 1, which CLIP pools)."""
    ids = torch.randint(3, 50, (n, 7), generator=torch.Generator().manual_seed(5))
    ids[:, -1] = 1
    return ids


def cosine(image: Tensor, text: Tensor) -> Tensor:
    """Cosine similarity by hand, in float64."""
    image, text = image.double(), text.double()
    return (image @ text) / (image.pow(2).sum(-1).sqrt() * text.pow(2).sum().sqrt())


def gradcam_reference(forward: Any, norm: nn.Module, embed: Any, text: Tensor) -> Tensor:
    """Grad-CAM of cos(image embedding, text) at ``norm``: tokens (N, 1 + 16, C), class token dropped.

    w_c = mean over the 16 patch tokens of d cos / d A_c, cam = ReLU(sum_c w_c A_c), on the 4x4 grid.
    """
    store: dict[str, Tensor] = {}
    handle = norm.register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
    try:
        out = forward()
    finally:
        handle.remove()
    a = store["a"]
    (g,) = torch.autograd.grad(cosine(embed(out), text).sum(), a)
    patches, grads = a.detach()[:, 1:], g[:, 1:]
    weights = grads.mean(dim=1, keepdim=True)
    cam = torch.relu((weights * patches).sum(-1))
    return cam.view(-1, GRID, GRID)


def assert_rel(actual: Tensor, expected: Tensor, rtol: float = 1e-6) -> None:
    scale = float(expected.abs().max())
    assert scale > 0
    assert float((actual - expected).abs().max()) <= rtol * scale


# --------------------------------------------------------------------------------------------------
# The target itself
# --------------------------------------------------------------------------------------------------
def test_value_is_cosine_similarity(clip: CLIPModel) -> None:
    with torch.no_grad():
        out = clip(pixel_values=pixels(), input_ids=prompts(3))
    scale = clip.logit_scale.exp()
    for i in range(3):
        text = out.text_embeds[i] * 7.0  # any norm: the cosine does not depend on it
        value = ImageTextSimilarityTarget(text)(out)
        cls_token = clip.vision_model.post_layernorm(out.vision_model_output.last_hidden_state[:, 0])
        by_hand = cosine(cls_token @ clip.visual_projection.weight.T, text)
        torch.testing.assert_close(value, by_hand, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(value, out.logits_per_image[:, i] / scale, rtol=1e-12, atol=1e-12)
    # tuple output (return_dict=False): image_embeds is entry 3
    with torch.no_grad():
        tup = clip(pixel_values=pixels(), input_ids=prompts(3), return_dict=False)
    target = ImageTextSimilarityTarget(out.text_embeds[0], output_key=3)
    torch.testing.assert_close(target(tup), out.logits_per_image[:, 0] / scale, rtol=1e-12, atol=1e-12)


def test_per_sample_text_and_rows() -> None:
    image = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    target = ImageTextSimilarityTarget(text)
    s = 2**-0.5
    torch.testing.assert_close(target(image[:2]), torch.tensor([1.0, s]))
    torch.testing.assert_close(target(image, torch.tensor([1, 1, 0])), torch.tensor([s, s, s]))
    torch.testing.assert_close(ImageTextSimilarityTarget(text[1])(image[2]), torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"2 text embeddings \(one per sample\) do not fit an output of 3 rows"):
        target(image)
    with pytest.raises(ValueError, match=r"one sample's image embedding \(D,\)"):
        target(image[0])


def test_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match=r"image embeddings have shape \(2, 3\) but the text embedding has 2"):
        ImageTextSimilarityTarget(torch.ones(2))(torch.ones(2, 3))
    with pytest.raises(TypeError, match=r"image embeddings in a model output that is a dict with keys 'logits'"):
        ImageTextSimilarityTarget(torch.ones(2))({"logits": torch.ones(2, 2)})
    with pytest.raises(ValueError, match=r"text_embedding must be one prompt's embedding \(D,\)"):
        ImageTextSimilarityTarget(torch.ones(2, 3, 4))
    with pytest.raises(TypeError, match=r"text_embedding must be a tensor or a numpy array"):
        ImageTextSimilarityTarget([1.0, 2.0])


# --------------------------------------------------------------------------------------------------
# Image side alone
# --------------------------------------------------------------------------------------------------
def test_vision_model_automatic_layer_and_reshape(vision: CLIPVisionModelWithProjection) -> None:
    x = pixels()
    texts = torch.randn(2, DIM, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    with GradCAM(vision, input_shape=(3, 32, 32)) as extractor:
        assert extractor.target_names == [LAYER]
        out = vision(pixel_values=x)
        maps = [
            extractor(targets=ImageTextSimilarityTarget(t), scores=out, normalized=False, retain_graph=i == 0)[0]
            for i, t in enumerate(texts)
        ]
    norm = vision.get_submodule(LAYER)
    for cam, text in zip(maps, texts, strict=True):
        assert cam.shape == (2, GRID, GRID)
        assert bool(torch.isfinite(cam).all())
        ref = gradcam_reference(lambda: vision(pixel_values=x), norm, lambda o: o.image_embeds, text)
        assert_rel(cam, ref)
    assert float((maps[0] - maps[1]).abs().max()) > 1e-3 * float(maps[0].abs().max())


class ImageEncoder(nn.Module):
    """What users write for "any model exposing an image encoder": ``clip.get_image_features``."""

    def __init__(self, clip: CLIPModel) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, pixel_values: Tensor) -> Any:
        return self.clip.get_image_features(pixel_values=pixel_values)  # pooler_output = projected (transformers 5)


def test_get_image_features_module(clip: CLIPModel) -> None:
    encoder = ImageEncoder(clip).eval()
    x = pixels()
    with torch.no_grad():
        text = clip(pixel_values=x, input_ids=prompts(1)).text_embeds[0]
    with GradCAM(encoder, "clip." + LAYER) as extractor:
        out = encoder(x)
        cam = extractor(targets=ImageTextSimilarityTarget(text), scores=out, normalized=False)[0]
    norm = clip.get_submodule(LAYER)
    ref = gradcam_reference(lambda: encoder(x), norm, lambda o: o.pooler_output, text)
    assert cam.shape == (2, GRID, GRID)
    assert_rel(cam, ref)


# --------------------------------------------------------------------------------------------------
# The full CLIPModel, called by the user with model(**inputs)
# --------------------------------------------------------------------------------------------------
def test_full_clip_two_prompts(clip: CLIPModel) -> None:
    inputs = {"pixel_values": pixels(), "input_ids": prompts(2)}
    with GradCAM(clip, target_layer=LAYER) as cam:
        outputs = clip(**inputs)
        texts = outputs.text_embeds.detach()
        maps = [
            cam(targets=ImageTextSimilarityTarget(texts[i]), scores=outputs, normalized=False, retain_graph=i == 0)[0]
            for i in range(2)
        ]
    norm = clip.get_submodule(LAYER)
    for i, cam_i in enumerate(maps):
        assert cam_i.shape == (2, GRID, GRID)
        assert bool(torch.isfinite(cam_i).all())
        ref = gradcam_reference(lambda: clip(**inputs), norm, lambda o: o.image_embeds, texts[i])
        assert_rel(cam_i, ref)
    difference = (maps[0] - maps[1]).abs().max()
    assert float(difference) > 1e-3 * float(maps[0].abs().max())


def test_full_clip_one_prompt_per_image(clip: CLIPModel) -> None:
    """An (N, D) text embedding (prompt n for image n) gives, per image, that prompt's map."""
    inputs = {"pixel_values": pixels(), "input_ids": prompts(2)}
    with GradCAM(clip, target_layer=LAYER) as cam:
        outputs = clip(**inputs)
        texts = outputs.text_embeds.detach()
        both = cam(targets=ImageTextSimilarityTarget(texts), scores=outputs, retain_graph=True)[0]
        first = cam(targets=ImageTextSimilarityTarget(texts[0]), scores=outputs, retain_graph=True)[0]
        second = cam(targets=ImageTextSimilarityTarget(texts[1]), scores=outputs)[0]
    torch.testing.assert_close(both[0], first[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(both[1], second[1], rtol=1e-12, atol=1e-12)


def test_full_clip_processor_order(clip: CLIPModel) -> None:
    """A processor's dict puts input_ids and attention_mask before pixel_values."""
    ids = prompts(2)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels()}
    results = []
    for order in (inputs, dict(reversed(inputs.items()))):  # processor order, then pixel_values first
        with GradCAM(clip, target_layer=LAYER) as cam:
            outputs = clip(**order)
            results.append(cam(targets=ImageTextSimilarityTarget(outputs.text_embeds[0].detach()), scores=outputs)[0])
    assert results[0].shape == (2, GRID, GRID)
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Re-run rows and the pytorch-grad-cam front door
# --------------------------------------------------------------------------------------------------
def test_scorecam_rows_per_sample_text(vision: CLIPVisionModelWithProjection) -> None:
    """Score-CAM scores masked rows of each image with that image's text (rows), in forwards of 5."""
    x = pixels()
    texts = torch.randn(2, DIM, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    with ScoreCAM(vision, LAYER, batch_size=5) as extractor:
        vision(x)
        both = extractor(targets=ImageTextSimilarityTarget(texts))[0]
    for n in range(2):
        with ScoreCAM(vision, LAYER) as extractor:
            vision(x[n : n + 1])
            alone = extractor(targets=ImageTextSimilarityTarget(texts[n]))[0]
        torch.testing.assert_close(both[n], alone[0], rtol=1e-9, atol=1e-12)
    assert bool(torch.isfinite(both).all())
    assert float((both[0] - both[1]).abs().max()) > 0


@pytest.mark.parametrize("method", ["GradCAM", "ScoreCAM"])
def test_front_door(vision: CLIPVisionModelWithProjection, method: str) -> None:
    """pytorch-grad-cam style: one target per image; maps at the input size in [0, 1]."""
    x = pixels()
    texts = torch.randn(2, DIM, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    layer = vision.get_submodule(LAYER)
    with getattr(front, method)(model=vision, target_layers=[layer]) as cam:
        both = cam(input_tensor=x, targets=[ImageTextSimilarityTarget(t) for t in texts])
    with GradCAM(vision, LAYER) as extractor:
        out = vision(x)
        per_image = extractor(targets=ImageTextSimilarityTarget(texts), scores=out)[0]
    assert both.shape == (2, 32, 32)
    assert float(both.min()) >= 0
    assert float(both.max()) <= 1
    if method == "GradCAM":  # the front door upsamples and normalizes the same per-image maps
        from camkit import ops

        expected = ops.normalize(ops.upsample(per_image, (32, 32))).numpy()
        assert abs(both - expected).max() < 1e-6


def test_front_door_dict_input(clip: CLIPModel) -> None:
    inputs = {"pixel_values": pixels(), "input_ids": prompts(2)}
    with torch.no_grad():
        texts = clip(**inputs).text_embeds
    with front.GradCAM(model=clip, target_layers=[clip.get_submodule(LAYER)]) as cam:
        maps = cam(input_tensor=inputs, targets=[ImageTextSimilarityTarget(texts[0])])
    assert maps.shape == (2, 32, 32)
