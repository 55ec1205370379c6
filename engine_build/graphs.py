"""The torch modules that become the bundle's ONNX graphs (see server/runtime/bundle.py for their I/O)."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn

from models.llava import LlavaModel


class DecomposedLayerNorm(nn.Module):
    """nn.LayerNorm written as ReduceMean/Sub/Pow/Sqrt/Div, sharing the original's parameters.

    At opset 17 the exporter maps nn.LayerNorm to LayerNormalization, which TensorRT 8.5 cannot
    parse; at opset 16 it emits these same ops. Statistics run in fp32 so an fp16 graph keeps the
    reduction precise (TensorRT 8.5 otherwise warns of LayerNorm overflow in FP16).
    """

    def __init__(self, ln: nn.LayerNorm) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = ln.weight, ln.bias, ln.eps

    def forward(self, x: Tensor) -> Tensor:
        h = x.to(torch.float32)
        mean = h.mean(-1, keepdim=True)
        var = (h - mean).pow(2).mean(-1, keepdim=True)
        h = (h - mean) / torch.sqrt(var + self.eps)
        return (h.to(x.dtype) * self.weight + self.bias) if self.bias is not None else h.to(x.dtype) * self.weight


def decompose_layernorms(module: nn.Module) -> nn.Module:
    """Replace every nn.LayerNorm under `module` in place; returns `module`."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.LayerNorm):
            setattr(module, name, DecomposedLayerNorm(child))
        else:
            decompose_layernorms(child)
    return module


class VisionGraph(nn.Module):
    """pixel_values [1,3,S,S] -> image_embeds [1,N,H]: tower, feature selection and connector."""

    def __init__(self, model: LlavaModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.model.encode_image(pixel_values)


class DecoderGraph(nn.Module):
    """One step over S new tokens against a fixed-size, runtime-owned KV cache.

    The cache slots are all M positions of past_key/past_value; past_mask says which hold a token.
    The S new tokens always see each other causally. Only the last position's logits are computed
    (prefill over ~760 tokens would otherwise spend ~50 GFLOP on an unused [S, 32000] lm_head), and
    only the new tokens' K/V are returned: the runtime writes them into its cache.
    """

    def __init__(self, model: LlavaModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs_embeds: Tensor, position_ids: Tensor, past_key: Tensor, past_value: Tensor,
                past_mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        mask = torch.cat((past_mask, torch.ones_like(position_ids)), dim=1)
        hidden, new_key, new_value = self.model.language_model(inputs_embeds, position_ids, past_key, past_value,
                                                               mask, new_kv_only=True)
        return self.model.lm_head(hidden[:, -1, :]).to(torch.float32), new_key, new_value
