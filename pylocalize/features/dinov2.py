"""DINOv2 patch descriptors through ``transformers`` (needs the ``torch`` extra).

Weights load offline only, from a local directory (``save_pretrained`` layout) or a
Hugging Face cache entry: this package never downloads. Descriptors are the tokens of an
intermediate transformer block (FoundPose: block 9 of ViT-S/14 with registers, block 18
of ViT-L/14), passed through the model's final layer norm, with the CLS and register
tokens dropped, one per 14-px patch, L2-normalised.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def default_layer(num_layers: int) -> int:
    """FoundPose's choice: block 9 of 12 (ViT-S/B), 18 of 24 (ViT-L); 3/4 of the depth otherwise."""
    return {12: 9, 24: 18}.get(num_layers, max(1, round(0.75 * num_layers)))


class DINOv2Extractor:
    """Patch descriptors from a DINOv2 (or DINOv2-with-registers) model.

    Parameters
    ----------
    weights : str or path
        A local model directory or a model id already in the Hugging Face cache.
    layer : int, optional
        Transformer block whose output is used (1-based); default :func:`default_layer`.
    device : str, optional
        ``"cuda"`` when available, else ``"cpu"``.
    """

    def __init__(self, weights, layer: Optional[int] = None, device: Optional[str] = None):
        try:
            import torch
            from transformers import AutoConfig, Dinov2Model, Dinov2WithRegistersModel
        except ImportError as error:
            raise ImportError("DINOv2Extractor needs torch and transformers: pip install 'pylocalize[torch]' "
                              "(install torch==2.13.0 first on CPU-only machines)") from error
        try:
            config = AutoConfig.from_pretrained(str(weights), local_files_only=True)
        except OSError as error:
            raise ValueError(f"no DINOv2 weights at {weights!r} (a local directory or a cached model id; "
                             f"nothing is downloaded): {error}") from None
        if config.model_type not in ("dinov2", "dinov2_with_registers"):
            raise ValueError(f"{weights}: a {config.model_type!r} model, not DINOv2")
        cls = Dinov2WithRegistersModel if config.model_type == "dinov2_with_registers" else Dinov2Model
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = cls.from_pretrained(str(weights), local_files_only=True).to(self.device).eval()
        self.layer = int(layer) if layer is not None else default_layer(config.num_hidden_layers)
        if not 1 <= self.layer <= config.num_hidden_layers:
            raise ValueError(f"layer must be in 1..{config.num_hidden_layers}, got {self.layer}")
        self.patch_size = int(config.patch_size)
        self.dim = int(config.hidden_size)
        self.num_registers = int(getattr(config, "num_register_tokens", 0) or 0)
        self.name = "dinov2"
        self.weights = str(weights)

    def __repr__(self) -> str:
        return f"DINOv2Extractor({self.weights!r}, layer={self.layer}, dim={self.dim}, device={self.device!r})"

    def __getstate__(self) -> dict:
        # transformers models do not pickle (they hold context variables), so an extractor
        # sent to other processes (Ray tasks: onboarding with --ray) carries the model's
        # config and weights instead, and needs no copy of the weights folder there
        state = self.__dict__.copy()
        model = state.pop("model")
        state["model_config"] = model.config.to_dict()
        state["model_weights"] = {name: value.detach().cpu() for name, value in model.state_dict().items()}
        return state

    def __setstate__(self, state: dict) -> None:
        import torch
        from transformers import AutoConfig, Dinov2Model, Dinov2WithRegistersModel

        config, weights = dict(state.pop("model_config")), state.pop("model_weights")
        self.__dict__.update(state)
        config = AutoConfig.for_model(config.pop("model_type"), **config)
        cls = Dinov2WithRegistersModel if config.model_type == "dinov2_with_registers" else Dinov2Model
        model = cls(config)
        model.load_state_dict(weights)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            self.device = "cpu"  # the process it went to has no GPU
        self.model = model.to(self.device).eval()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import torch

        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] < 3:
            raise ValueError(f"image must be (H, W, 3), got shape {img.shape}")
        gh, gw = img.shape[0] // self.patch_size, img.shape[1] // self.patch_size
        if gh == 0 or gw == 0:
            raise ValueError(f"image of {img.shape[1]}x{img.shape[0]} is smaller than one {self.patch_size}-px patch")
        img = img[: gh * self.patch_size, : gw * self.patch_size, :3].astype(np.float32) / 255.0
        x = torch.from_numpy(((img - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None].copy()).to(self.device)
        with torch.no_grad():
            out = self.model(pixel_values=x, output_hidden_states=True)
            tokens = self.model.layernorm(out.hidden_states[self.layer])[0, 1 + self.num_registers:]
            tokens = torch.nn.functional.normalize(tokens, dim=-1)
        return tokens.reshape(gh, gw, self.dim).float().cpu().numpy()
