"""Image token extractors for the geo-localization heads (torch extra).

DINOv2 (``transformers.Dinov2Model``, with or without registers) and CLIP vision
(``transformers.CLIPVisionModel``) backbones, loaded offline from a local directory
(``save_pretrained`` layout) or a Hugging Face cache entry: nothing is downloaded. Images
are resized to a square ``image_size`` and normalised with the backbone's statistics; the
output is the final layer's tokens, ``float32 (batch, tokens, dim)``: the CLS token first
(a global embedding), then registers (DINOv2 with registers), then one token per patch.
DINOv2 tokens are after the model's final layer norm; CLIP tokens after its
``post_layernorm`` (the norm CLIP applies to its pooled CLS output), so both come out on
the same scale the heads expect.

The DINOv2 weights are loaded through :class:`pylocalize.features.dinov2.DINOv2Extractor`,
the project's one DINOv2 loader (model type checks, offline loading); that class gives
intermediate-layer patch descriptors for FoundPose, this one gives the final tokens of a
batch for the geo heads.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# the statistics CLIP's image processor normalises with (Radford et al., 2021)
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def _imports():
    try:
        import torch
        import transformers
    except ImportError as error:
        raise ImportError("token extractors need torch and transformers: pip install 'pylocalize[torch]' "
                          "(install torch==2.13.0 first on CPU-only machines)") from error
    return torch, transformers


class TokenExtractor:
    """Final-layer tokens of a DINOv2 or CLIP vision backbone.

    Parameters
    ----------
    weights : str or path
        A local model directory or a model id already in the Hugging Face cache.
    image_size : int, optional
        Side of the square input, a multiple of the patch size; default: the model
        config's ``image_size`` for CLIP, 224 for DINOv2.
    device : str, optional
        ``"cuda"`` when available, else ``"cpu"``.

    Attributes
    ----------
    kind : {"dinov2", "clip"}
    dim, num_tokens, patch_size, image_size : int
    """

    def __init__(self, weights, image_size: Optional[int] = None, device: Optional[str] = None):
        torch, transformers = _imports()
        try:
            config = transformers.AutoConfig.from_pretrained(str(weights), local_files_only=True)
        except (OSError, ValueError) as error:
            raise ValueError(f"no backbone weights at {weights!r} (a local directory or a cached model id; nothing "
                             f"is downloaded): {error}") from None
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if config.model_type in ("dinov2", "dinov2_with_registers"):
            from pylocalize.features.dinov2 import DINOv2Extractor

            self.kind = "dinov2"
            self.model = DINOv2Extractor(weights, device=self.device).model
            self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
            self.num_prefix = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
            default_size = 224
        elif config.model_type in ("clip", "clip_vision_model"):
            self.kind = "clip"
            vision = config.vision_config if config.model_type == "clip" else config
            self.model = transformers.CLIPVisionModel.from_pretrained(str(weights), local_files_only=True)
            self.model = self.model.to(self.device).eval()
            self.mean, self.std = CLIP_MEAN, CLIP_STD
            self.num_prefix = 1
            config = vision
            default_size = int(config.image_size)
        else:
            raise ValueError(f"{weights}: a {config.model_type!r} model; give a DINOv2 or CLIP (vision) model")
        self.patch_size = int(config.patch_size)
        self.dim = int(config.hidden_size)
        self.image_size = int(image_size or default_size)
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of the patch size {self.patch_size}")
        if self.kind == "clip" and self.image_size != int(config.image_size):
            raise ValueError(f"CLIP's position embeddings fix image_size at {config.image_size}; got {self.image_size}")
        self.num_tokens = self.num_prefix + (self.image_size // self.patch_size) ** 2
        self.weights = str(weights)

    def __repr__(self) -> str:
        return (f"TokenExtractor({self.weights!r}, kind={self.kind!r}, image_size={self.image_size}, "
                f"tokens={self.num_tokens}, dim={self.dim})")

    def preprocess(self, images: Union[np.ndarray, Sequence[np.ndarray]]) -> np.ndarray:
        """Resized, normalised ``float32 (batch, 3, image_size, image_size)`` pixels of
        ``uint8`` RGB images ``(H, W, 3)`` (a batch array or a list of any sizes)."""
        import cv2

        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = images[None]
        out = []
        for i, img in enumerate(images):
            img = np.asarray(img)
            if img.ndim != 3 or img.shape[2] < 3 or img.dtype != np.uint8:
                raise ValueError(f"image {i} must be uint8 RGB (H, W, 3), got shape {img.shape} {img.dtype}")
            size = (self.image_size, self.image_size)
            interp = cv2.INTER_AREA if min(img.shape[:2]) > self.image_size else cv2.INTER_CUBIC
            img = cv2.resize(np.ascontiguousarray(img[..., :3]), size, interpolation=interp)
            out.append(((img.astype(np.float32) / 255.0 - self.mean) / self.std).transpose(2, 0, 1))
        if not out:
            raise ValueError("no images given")
        return np.ascontiguousarray(np.stack(out), np.float32)

    def __call__(self, images, batch_size: int = 32) -> np.ndarray:
        """Tokens ``float32 (batch, num_tokens, dim)`` of RGB images (see :meth:`preprocess`)."""
        torch, _ = _imports()
        pixels = self.preprocess(images)
        out = []
        with torch.no_grad():
            for s in range(0, len(pixels), batch_size):
                x = torch.from_numpy(pixels[s:s + batch_size]).to(self.device)
                tokens = self.model(pixel_values=x).last_hidden_state
                if self.kind == "clip":
                    # transformers 4 nests the norm in .vision_model, 5 does not
                    tokens = getattr(self.model, "vision_model", self.model).post_layernorm(tokens)
                out.append(tokens.float().cpu().numpy())
        return np.concatenate(out)


__all__ = ["TokenExtractor"]
