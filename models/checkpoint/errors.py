"""Why a checkpoint cannot be read. Every message names the file or tensor and says what to do."""
from __future__ import annotations


class CheckpointError(Exception):
    """Base class: the checkpoint directory cannot be turned into a model."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A file the checkpoint needs (config.json, weights, a separate vision tower) is absent."""


class UnsupportedCheckpointError(CheckpointError):
    """The checkpoint is readable but describes an architecture or option this project cannot run."""


class CheckpointConfigError(CheckpointError):
    """config.json (or a tower's config) is malformed or contradicts itself."""


class CorruptCheckpointError(CheckpointError):
    """A weights file or the shard index is damaged: bad header, truncated data, dangling index."""


class TensorMismatchError(CheckpointError):
    """The tensors do not match what the config describes (base of the three below)."""


class MissingTensorError(TensorMismatchError):
    pass


class UnexpectedTensorError(TensorMismatchError):
    pass


class ShapeMismatchError(TensorMismatchError):
    pass


class TokenizerNotFoundError(CheckpointError, FileNotFoundError):
    """No tokenizer.json, tokenizer.model or vocab.json + merges.txt beside the weights."""
