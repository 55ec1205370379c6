"""Vision-to-text connectors (LLaVA `multimodal_projector/builder.py`).

Names follow transformers' LlavaMultiModalProjector (`linear_1`, `linear_2`); LLaVA's own
`mm_projector.0` / `mm_projector.2` map onto them in the checkpoint readers.
"""
from __future__ import annotations

from torch import Tensor, nn

from models.config import CONNECTOR_TYPES, ConfigError
from models.layers import activation


class MlpGeluConnector(nn.Module):
    """mlp2x_gelu: Linear(vision -> text), GELU (exact erf, LLaVA's nn.GELU()), Linear(text -> text)."""

    def __init__(self, vision_hidden: int, text_hidden: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(vision_hidden, text_hidden)
        self.act = activation("gelu")
        self.linear_2 = nn.Linear(text_hidden, text_hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class LinearConnector(nn.Module):
    """linear: a single Linear(vision -> text) (LLaVA-1.0 style projector)."""

    def __init__(self, vision_hidden: int, text_hidden: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(vision_hidden, text_hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_1(x)


def build_connector(kind: str, vision_hidden: int, text_hidden: int) -> nn.Module:
    if kind == "mlp2x_gelu":
        return MlpGeluConnector(vision_hidden, text_hidden)
    if kind == "linear":
        return LinearConnector(vision_hidden, text_hidden)
    raise ConfigError("unsupported connector %r (supported: %s)" % (kind, ", ".join(CONNECTOR_TYPES)))
