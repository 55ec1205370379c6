"""Every way a checkpoint can be wrong gets its own exception type and a message naming the culprit."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Dict

import pytest

torch = pytest.importorskip("torch")  # export-side code: skipped in the torch-free Python 3.8 run
pytest.importorskip("safetensors")

from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from models.checkpoint.errors import (  # noqa: E402
    CheckpointConfigError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    MissingTensorError,
    ShapeMismatchError,
    TokenizerNotFoundError,
    UnexpectedTensorError,
    UnsupportedCheckpointError,
)
from models.checkpoint.reader import read_checkpoint  # noqa: E402
from models.checkpoint.writer import make_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("orig")
    return {
        "llava": make_checkpoint(root / "llava", "tiny", "llava", progress=False),
        "hf-phi": make_checkpoint(root / "hf-phi", "tiny-phi", "hf", progress=False),
        "sharded": make_checkpoint(root / "sharded", "tiny", "factory", max_shard_bytes=64 * 1024, progress=False),
    }


@pytest.fixture
def copy_of(originals: Dict[str, Path], tmp_path: Path) -> Callable[[str], Path]:
    def make(name: str) -> Path:
        return Path(shutil.copytree(originals[name], tmp_path / name))
    return make


def edit_weights(path: Path, edit: Callable[[Dict[str, torch.Tensor]], None], file: str = "model.safetensors") -> None:
    with safe_open(str(path / file), framework="pt") as f:
        tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    edit(tensors)
    save_file(tensors, str(path / file), metadata={"format": "pt"})


def edit_config(path: Path, **changes: object) -> None:
    cj = json.loads((path / "config.json").read_text())
    cj.update(changes)
    (path / "config.json").write_text(json.dumps(cj))


# ---- tensors --------------------------------------------------------------------------------------

def test_missing_tensor(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("llava")
    edit_weights(path, lambda t: t.pop("model.layers.1.mlp.down_proj.weight"))
    with pytest.raises(MissingTensorError) as e:
        read_checkpoint(path)
    assert "language_model.layers.1.mlp.down_proj.weight (stored as model.layers.1.mlp.down_proj.weight)" in str(e.value)


def test_unexpected_tensor_matching_no_rule(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("llava")
    edit_weights(path, lambda t: t.update({"image_newline": torch.zeros(64)}))
    with pytest.raises(UnexpectedTensorError, match=r"image_newline \(in model.safetensors\)"):
        read_checkpoint(path)


def test_unexpected_tensor_outside_the_config(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("llava")
    edit_weights(path, lambda t: t.update({"model.layers.5.mlp.up_proj.weight": torch.zeros(128, 64)}))
    with pytest.raises(UnexpectedTensorError, match=r"model.layers.5.mlp.up_proj.weight \(internal "
                                                    r"language_model.layers.5.mlp.up_proj.weight\)"):
        read_checkpoint(path)


def test_wrong_shape_names_key_and_both_shapes(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("llava")
    edit_weights(path, lambda t: t.update({"model.mm_projector.0.weight": torch.zeros(64, 33)}))
    with pytest.raises(ShapeMismatchError) as e:
        read_checkpoint(path)
    msg = str(e.value)
    assert "'model.mm_projector.0.weight'" in msg and "[64, 33]" in msg and "[64, 32]" in msg


def test_hf_layout_cannot_store_an_lm_head_bias(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("hf-phi")
    edit_weights(path, lambda t: t.update({"language_model.lm_head.bias": torch.zeros(1024)}))
    with pytest.raises(UnexpectedTensorError, match="language_model.lm_head.bias"):
        read_checkpoint(path)


def test_two_spellings_of_one_tensor(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("hf-phi")
    name = "vision_tower.embeddings.patch_embedding.bias"
    edit_weights(path, lambda t: t.update({"vision_tower.vision_model.embeddings.patch_embedding.bias": t[name].clone()}))
    with pytest.raises(CorruptCheckpointError, match="vision_tower.vision_model.embeddings.patch_embedding.bias"):
        read_checkpoint(path)


# ---- files ----------------------------------------------------------------------------------------

def test_bad_safetensors_header(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("llava")
    data = bytearray((path / "model.safetensors").read_bytes())
    data[8:24] = b"\x00garbage-header!"
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match=r"model.safetensors is not a readable safetensors file"):
        read_checkpoint(path)


def test_truncated_safetensors(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("llava")
    f = path / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CorruptCheckpointError) as e:
        read_checkpoint(path)
    assert str(f) in str(e.value) and "truncated" in str(e.value)


def test_index_names_a_missing_shard(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("sharded")
    shards = sorted(path.glob("model-*.safetensors"))
    shards[1].unlink()
    with pytest.raises(CorruptCheckpointError, match="names shard %s" % shards[1].name):
        read_checkpoint(path)


def test_shards_without_index(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("sharded")
    (path / "model.safetensors.index.json").unlink()
    with pytest.raises(CorruptCheckpointError, match="no model.safetensors.index.json"):
        read_checkpoint(path)


def test_index_and_shards_disagree(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("sharded")
    index = json.loads((path / "model.safetensors.index.json").read_text())
    name, shard = next(iter(index["weight_map"].items()))
    other = next(s for s in sorted(set(index["weight_map"].values())) if s != shard)
    index["weight_map"][name] = other
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CorruptCheckpointError, match="holds %s but that shard does not" % name):
        read_checkpoint(path)


def test_only_pickled_weights(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("llava")
    (path / "model.safetensors").rename(path / "pytorch_model.bin")
    with pytest.raises(UnsupportedCheckpointError, match="pytorch_model.bin"):
        read_checkpoint(path)


def test_missing_config_json(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("llava")
    (path / "config.json").unlink()
    with pytest.raises(CheckpointNotFoundError, match="no config.json in"):
        read_checkpoint(path)


def test_config_json_not_json(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("llava")
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointConfigError, match="config.json is not valid JSON"):
        read_checkpoint(path)


def test_no_tokenizer(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("llava")
    (path / "tokenizer.model").unlink()
    ck = read_checkpoint(path)  # the weights are still readable
    assert ck.tokenizer_source is None
    with pytest.raises(TokenizerNotFoundError, match="no tokenizer in"):
        ck.load_tokenizer()


def test_make_checkpoint_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        make_checkpoint(tmp_path, "tiny", "llava", progress=False)


# ---- config and architecture ---------------------------------------------------------------------

@pytest.mark.parametrize("changes, named", [
    ({"model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"]}, "qwen2_vl"),
    ({"architectures": ["TinyLlavaStablelmForCausalLM"]}, "TinyLlavaStablelmForCausalLM"),
    ({"mm_projector_type": "resampler"}, "mm_projector_type 'resampler'"),
    ({"image_aspect_ratio": "anyres"}, "image_aspect_ratio 'anyres'"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "RoPE scaling"),
])
def test_unsupported_config(copy_of: Callable[[str], Path], changes: dict, named: str) -> None:
    path = copy_of("llava")
    edit_config(path, **changes)
    with pytest.raises(UnsupportedCheckpointError) as e:
        read_checkpoint(path)
    assert named in str(e.value)


def test_mm_hidden_size_disagrees_with_the_tower(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("llava")
    edit_config(path, mm_hidden_size=48)
    with pytest.raises(CheckpointConfigError, match="mm_hidden_size=48"):
        read_checkpoint(path)


def test_separate_tower_directory_missing(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("llava")
    shutil.rmtree(path / "siglip_vision_tower")
    with pytest.raises(CheckpointNotFoundError) as e:
        read_checkpoint(path)
    assert str(path / "siglip_vision_tower") in str(e.value) and "mm_vision_tower" in str(e.value)


def test_absolute_tower_path_missing(copy_of: Callable[[str], Path], tmp_path: Path) -> None:
    path = copy_of("llava")
    edit_config(path, mm_vision_tower=str(tmp_path / "nowhere" / "siglip"))
    with pytest.raises(CheckpointNotFoundError, match="nowhere/siglip"):
        read_checkpoint(path)


def test_absolute_tower_path_elsewhere_is_used(copy_of: Callable[[str], Path], tmp_path: Path) -> None:
    path = copy_of("llava")
    moved = Path(shutil.move(str(path / "siglip_vision_tower"), str(tmp_path / "towers" / "siglip")))
    edit_config(path, mm_vision_tower=str(moved))
    assert read_checkpoint(path).vision_tower_path == moved


def test_unknown_hub_tower(copy_of: Callable[[str], Path]) -> None:
    path = copy_of("llava")
    shutil.rmtree(path / "siglip_vision_tower")
    edit_config(path, mm_vision_tower="someorg/some-tower")
    with pytest.raises(CheckpointNotFoundError, match="huggingface-cli download someorg/some-tower"):
        read_checkpoint(path)


def test_known_hub_tower_with_other_weights(copy_of: Callable[[str], Path]) -> None:
    """mm_vision_tower names so400m, but the checkpoint embeds the tiny tower: shapes disagree."""
    path = copy_of("llava")
    shutil.rmtree(path / "siglip_vision_tower")
    edit_config(path, mm_vision_tower="google/siglip-so400m-patch14-384", mm_hidden_size=1152)
    with pytest.raises(ShapeMismatchError) as e:
        read_checkpoint(path)
    msg = str(e.value)  # the first tensor whose width depends on the tower: the projector's input
    assert "'model.mm_projector.0.weight'" in msg and "[64, 32]" in msg and "[64, 1152]" in msg
