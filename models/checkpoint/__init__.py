"""Checkpoint layouts: reading (strict, memory-mapped) and writing (random weights).

spec.py          internal parameter names and shapes from a ModelConfig (torch-free)
layouts.py       per-layout key-mapping tables (llava / factory / hf) and detect_layout (torch-free)
config_read.py   config.json -> ModelConfig (config_from_json)          config_write.py  the inverse
safetensors_io   memory-mapped reading of single/sharded files, streaming writing
tokenizer_files  finding and loading the tokenizer beside the weights
reader.py        read_checkpoint, load_model                             writer.py  make_checkpoint
errors.py        the CheckpointError family

This package imports nothing on purpose: `models.checkpoint.spec` must not pull in torch.
"""
