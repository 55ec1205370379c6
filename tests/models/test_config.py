"""Config arithmetic against the published model facts (shared/reference/tinyllava_med_model.md)."""
from __future__ import annotations

import dataclasses

import pytest

from models.config import ConfigError, ModelConfig, preset


def test_tinyllava_med_image_tokens_and_layers() -> None:
    cfg = preset("tinyllava-med-1.5b")
    # 384 / 14 = 27 patches a side -> 729 tokens; the LLaVA/bczhou code keeps them all.
    assert cfg.vision.num_patches == 729
    assert cfg.num_image_tokens == 729
    # feature layer -2 of a 27-layer tower: the last layer never runs.
    assert cfg.vision.num_layers_used == 26
    assert cfg.text.head_dim == 64 and cfg.text.num_kv_heads == 4
    assert cfg.image.pad_fill == (127, 127, 127)


def test_factory_siglip_convention_drops_first_patch() -> None:
    v = dataclasses.replace(preset("tinyllava-med-1.5b").vision, patch_drops_first=True)
    assert v.num_image_tokens == 728  # TinyLLaVA_Factory issue #203


def test_clip_cls_drop_and_full() -> None:
    clip = preset("tiny-clip").vision
    assert clip.num_positions == clip.num_patches + 1
    assert clip.num_image_tokens == clip.num_patches  # "patch" drops CLS
    assert dataclasses.replace(clip, select_strategy="full").num_image_tokens == clip.num_patches + 1


def test_phi_partial_rotary() -> None:
    phi = preset("tinyllava-phi-3.1b").text
    assert phi.head_dim == 80 and phi.rotary_dim == 32  # partial_rotary_factor 0.4 of 80


def test_clip_pad_fill_from_mean() -> None:
    assert preset("tiny-clip").image.pad_fill == (122, 116, 104)


def test_round_trip_dict() -> None:
    for name in ("tiny", "tiny-phi", "tiny-clip", "tinyllava-med-1.5b"):
        cfg = preset(name)
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        preset("nope")
    with pytest.raises(ConfigError, match="unsupported vision tower 'resnet'"):
        dataclasses.replace(preset("tiny").vision, family="resnet")
    with pytest.raises(ConfigError, match="unsupported connector 'qformer'"):
        preset("tiny").replace(connector="qformer")
