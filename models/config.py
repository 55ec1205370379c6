"""Model configuration: dataclasses and named presets.

Torch-free on purpose: the processor, the bundle manifest and the server read these
on Python 3.8 without PyTorch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

# Image token sentinel that LLaVA/TinyLLaVA put in prompt ids where the image goes
# (LLaVA `constants.py`: IMAGE_TOKEN_INDEX = -200).
IMAGE_TOKEN_INDEX = -200
# The prompt-text marker for the image (LLaVA `constants.py`: DEFAULT_IMAGE_TOKEN; also transformers
# LlavaProcessor's default image_token): prompts are split on it and IMAGE_TOKEN_INDEX goes in between.
IMAGE_TOKEN = "<image>"

SIGLIP_MEAN = (0.5, 0.5, 0.5)  # google/siglip-so400m-patch14-384 preprocessor_config.json
SIGLIP_STD = (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # openai/clip-vit-large-patch14-336
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

VISION_FAMILIES = ("siglip", "clip")
TEXT_FAMILIES = ("llama", "phi")
CONNECTOR_TYPES = ("mlp2x_gelu", "linear")
SELECT_STRATEGIES = ("patch", "full")


class ConfigError(ValueError):
    """A configuration value is missing, inconsistent or unsupported."""


@dataclass(frozen=True)
class VisionConfig:
    family: str  # "siglip" | "clip"
    image_size: int
    patch_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int  # layers in the checkpoint's tower (the model runs only up to feature_layer)
    num_heads: int
    layer_norm_eps: float
    hidden_act: str  # "gelu_pytorch_tanh" (SigLIP) | "quick_gelu" (CLIP)
    feature_layer: int = -2  # LLaVA's mm_vision_select_layer: hidden_states[feature_layer]
    select_strategy: str = "patch"  # "patch" | "full" (LLaVA's mm_vision_select_feature)
    # Whether "patch" selection drops token 0. CLIP: True (token 0 is CLS). SigLIP has no CLS:
    # the LLaVA/bczhou code keeps all 729 (False); TinyLLaVA_Factory drops the first patch
    # anyway (True, 728 tokens; TinyLLaVA_Factory issue #203).
    patch_drops_first: bool = False

    def __post_init__(self) -> None:
        if self.family not in VISION_FAMILIES:
            raise ConfigError("unsupported vision tower %r (supported: %s)" % (self.family, ", ".join(VISION_FAMILIES)))
        if self.select_strategy not in SELECT_STRATEGIES:
            raise ConfigError("unsupported select strategy %r (supported: patch, full)" % self.select_strategy)
        if self.image_size < self.patch_size:
            raise ConfigError("image_size %d smaller than patch_size %d" % (self.image_size, self.patch_size))
        if self.hidden_size % self.num_heads:
            raise ConfigError("vision hidden_size %d not divisible by %d heads" % (self.hidden_size, self.num_heads))
        if not -self.num_layers <= self.feature_layer <= self.num_layers:
            raise ConfigError("feature_layer %d outside a %d-layer tower" % (self.feature_layer, self.num_layers))

    @property
    def has_cls(self) -> bool:
        return self.family == "clip"

    @property
    def num_patches(self) -> int:
        # A stride-`patch` convolution: 384 // 14 = 27 per side for SigLIP-so400m (2 pixels unused).
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_positions(self) -> int:
        return self.num_patches + (1 if self.has_cls else 0)

    @property
    def num_layers_used(self) -> int:
        """Encoder layers that must run to produce hidden_states[feature_layer].

        hidden_states has num_layers + 1 entries (the embeddings first), so index k >= 0 needs
        k layers and index -j needs num_layers + 1 - j layers.
        """
        k = self.feature_layer
        return k if k >= 0 else self.num_layers + 1 + k

    @property
    def num_image_tokens(self) -> int:
        drop = 1 if (self.select_strategy == "patch" and self.patch_drops_first) else 0
        return self.num_positions - drop

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class TextConfig:
    family: str  # "llama" | "phi"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    max_position_embeddings: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5  # RMSNorm eps (llama) or LayerNorm eps (phi)
    hidden_act: str = "silu"  # "silu" (llama SwiGLU) | "gelu_new" (phi)
    partial_rotary_factor: float = 1.0  # phi-2: 0.4
    bos_token_id: Optional[int] = 1
    eos_token_id: int = 2
    pad_token_id: Optional[int] = 0
    tie_word_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.family not in TEXT_FAMILIES:
            raise ConfigError("unsupported language model %r (supported: %s)" % (self.family, ", ".join(TEXT_FAMILIES)))
        if self.hidden_size % self.num_heads:
            raise ConfigError("hidden_size %d not divisible by %d heads" % (self.hidden_size, self.num_heads))
        if self.num_heads % self.num_kv_heads:
            raise ConfigError("%d heads not divisible by %d KV heads" % (self.num_heads, self.num_kv_heads))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def rotary_dim(self) -> int:
        # HF Phi: int(partial_rotary_factor * head_dim)
        return int(self.partial_rotary_factor * self.head_dim)


@dataclass(frozen=True)
class ImageConfig:
    """How an image becomes pixel_values (LLaVA `process_images` + the tower's image processor)."""

    size: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    aspect: str = "pad"  # "pad": expand2square with the mean colour; "square": plain resize
    resize: str = "exact"  # "exact": resize to size x size (SigLIP); "shortest_edge_crop": CLIP
    resample: str = "bicubic"
    rescale_factor: float = 1.0 / 255.0

    @property
    def pad_fill(self) -> Tuple[int, int, int]:
        # LLaVA expand2square: tuple(int(x * 255) for x in image_processor.image_mean)
        return tuple(int(m * 255) for m in self.mean)  # type: ignore[return-value]


@dataclass(frozen=True)
class ModelConfig:
    name: str
    vision: VisionConfig
    text: TextConfig
    connector: str = "mlp2x_gelu"
    template: str = "vicuna_v1"
    image: Optional[ImageConfig] = None  # derived from the vision tower when None

    def __post_init__(self) -> None:
        if self.connector not in CONNECTOR_TYPES:
            raise ConfigError("unsupported connector %r (supported: %s)" % (self.connector, ", ".join(CONNECTOR_TYPES)))
        if self.image is None:
            object.__setattr__(self, "image", default_image_config(self.vision))

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_image_tokens

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ModelConfig":
        image = d.get("image")
        return cls(
            name=d["name"],
            vision=VisionConfig(**d["vision"]),
            text=TextConfig(**d["text"]),
            connector=d.get("connector", "mlp2x_gelu"),
            template=d.get("template", "vicuna_v1"),
            image=ImageConfig(**{**image, "mean": tuple(image["mean"]), "std": tuple(image["std"])}) if image else None,
        )


def default_image_config(vision: VisionConfig) -> ImageConfig:
    if vision.family == "siglip":
        return ImageConfig(size=vision.image_size, mean=SIGLIP_MEAN, std=SIGLIP_STD, resize="exact")
    return ImageConfig(size=vision.image_size, mean=CLIP_MEAN, std=CLIP_STD, resize="shortest_edge_crop")


# ---- presets ---------------------------------------------------------------------------

# google/siglip-so400m-patch14-384 (as in bczhou/TinyLLaVA-1.5B-SigLIP's config)
SIGLIP_SO400M = VisionConfig(
    family="siglip", image_size=384, patch_size=14, hidden_size=1152, intermediate_size=4304,
    num_layers=27, num_heads=16, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh",
)
# openai/clip-vit-large-patch14-336
CLIP_L336 = VisionConfig(
    family="clip", image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096,
    num_layers=24, num_heads=16, layer_norm_eps=1e-5, hidden_act="quick_gelu", patch_drops_first=True,
)
# TinyLlama/TinyLlama-1.1B (bczhou/TinyLLaVA-1.5B config.json)
TINYLLAMA_1_1B = TextConfig(
    family="llama", vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_layers=22,
    num_heads=32, num_kv_heads=4, max_position_embeddings=2048, rope_theta=10000.0, norm_eps=1e-5,
)
# microsoft/phi-2 (text_config of tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B)
PHI_2 = TextConfig(
    family="phi", vocab_size=51200, hidden_size=2560, intermediate_size=10240, num_layers=32,
    num_heads=32, num_kv_heads=32, max_position_embeddings=2048, rope_theta=10000.0, norm_eps=1e-5,
    hidden_act="gelu_new", partial_rotary_factor=0.4, bos_token_id=50256, eos_token_id=50256,
    pad_token_id=50256,
)

_TINY_SIGLIP = VisionConfig(
    family="siglip", image_size=56, patch_size=14, hidden_size=32, intermediate_size=64,
    num_layers=3, num_heads=4, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh",
)
_TINY_CLIP = VisionConfig(
    family="clip", image_size=56, patch_size=14, hidden_size=32, intermediate_size=64,
    num_layers=3, num_heads=4, layer_norm_eps=1e-5, hidden_act="quick_gelu", patch_drops_first=True,
)
_TINY_LLAMA = TextConfig(
    family="llama", vocab_size=1024, hidden_size=64, intermediate_size=128, num_layers=2,
    num_heads=4, num_kv_heads=2, max_position_embeddings=256,
)
_TINY_PHI = TextConfig(
    family="phi", vocab_size=1024, hidden_size=64, intermediate_size=128, num_layers=2,
    num_heads=4, num_kv_heads=4, max_position_embeddings=256, hidden_act="gelu_new",
    partial_rotary_factor=0.4, bos_token_id=None, eos_token_id=0, pad_token_id=0,
)

# The embedded demo model (scripts/make-demo-model): the TinyLLaVA shape at a size a 2-core CPU
# trains from scratch in minutes on the synthetic images (models/synthetic): 64 px in 8 px patches
# (64 image tokens), a 4-layer SigLIP-shaped tower and a 3-layer Llama decoder of width 128.
_DEMO_SIGLIP = VisionConfig(
    family="siglip", image_size=64, patch_size=8, hidden_size=96, intermediate_size=192,
    num_layers=4, num_heads=4, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh",
)
_DEMO_LLAMA = TextConfig(
    family="llama", vocab_size=1024, hidden_size=128, intermediate_size=256, num_layers=3,
    num_heads=4, num_kv_heads=2, max_position_embeddings=384,
)

PRESETS: Dict[str, ModelConfig] = {
    "tinyllava-med-1.5b": ModelConfig("tinyllava-med-1.5b", SIGLIP_SO400M, TINYLLAMA_1_1B, template="vicuna_v1"),
    "tinyllava-phi-3.1b": ModelConfig("tinyllava-phi-3.1b", SIGLIP_SO400M, PHI_2, template="phi"),
    "tiny": ModelConfig("tiny", _TINY_SIGLIP, _TINY_LLAMA, template="vicuna_v1"),
    "tiny-phi": ModelConfig("tiny-phi", _TINY_SIGLIP, _TINY_PHI, template="phi"),
    "tiny-clip": ModelConfig("tiny-clip", _TINY_CLIP, _TINY_LLAMA, template="vicuna_v1"),
    "synthetic-demo": ModelConfig("synthetic-demo", _DEMO_SIGLIP, _DEMO_LLAMA, template="vicuna_v1"),
}


def preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError("unknown preset %r (known: %s)" % (name, ", ".join(sorted(PRESETS)))) from None


def preset_names() -> List[str]:
    return sorted(PRESETS)


__all__ = [
    "IMAGE_TOKEN", "IMAGE_TOKEN_INDEX", "ConfigError", "VisionConfig", "TextConfig", "ImageConfig", "ModelConfig",
    "PRESETS", "preset", "preset_names", "default_image_config",
]
