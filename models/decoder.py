"""The text decoder stack, one class for both families (as litgpt does: the config picks the parts).

Llama (RMSNorm, SwiGLU, full RoPE) and Phi-2 (LayerNorm, parallel attention + MLP, partial RoPE)
differ only in their decoder layer (models/llama.py, models/phi.py), the final norm and the
rotary width (TextConfig.rotary_dim: the whole head for Llama). The final norm keeps each family's
transformers name, `norm` or `final_layernorm`, so checkpoint keys map unchanged.

forward(inputs_embeds [B,S,H], position_ids [B,S] int64, past_key/past_value [L,B,KVH,P,D],
attention_mask [B,P+S] (1 attend, 0 pad)) -> (hidden [B,S,H] after the final norm,
present_key, present_value [L,B,KVH,P+S,D]). P may be 0. The lm_head lives on LlavaModel.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple, Type

from torch import Tensor, nn

from models.config import ConfigError, TextConfig
from models.layers import RMSNorm, causal_mask_bias, rope_cos_sin, run_layers
from models.llama import LlamaDecoderLayer
from models.phi import PhiDecoderLayer

# family -> (decoder layer, the final norm's attribute name, the final norm)
_FAMILIES: Dict[str, Tuple[Type[nn.Module], str, Callable[[TextConfig], nn.Module]]] = {
    "llama": (LlamaDecoderLayer, "norm", lambda cfg: RMSNorm(cfg.hidden_size, cfg.norm_eps)),
    "phi": (PhiDecoderLayer, "final_layernorm", lambda cfg: nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)),
}


class DecoderModel(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        if cfg.family not in _FAMILIES:
            raise ConfigError("no decoder for text family %r (known: %s)" % (cfg.family, ", ".join(_FAMILIES)))
        layer, norm_name, make_norm = _FAMILIES[cfg.family]
        self.rope_theta = cfg.rope_theta
        self.rotary_dim = cfg.rotary_dim
        self.query_groups = cfg.num_heads // cfg.num_kv_heads  # query heads per KV head (GQA; 1 for Phi-2)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([layer(cfg) for _ in range(cfg.num_layers)])
        self._norm_name = norm_name
        self.add_module(norm_name, make_norm(cfg))

    def forward(self, inputs_embeds: Tensor, position_ids: Tensor, past_key: Tensor, past_value: Tensor,
                attention_mask: Tensor, new_kv_only: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
        cos, sin = rope_cos_sin(position_ids, self.rotary_dim, self.rope_theta, inputs_embeds.dtype)
        bias = causal_mask_bias(attention_mask, inputs_embeds.shape[1], self.query_groups)
        h, key, value = run_layers(self.layers, inputs_embeds, cos, sin, past_key, past_value, bias, new_kv_only)
        return getattr(self, self._norm_name)(h), key, value


__all__ = ["DecoderModel"]
