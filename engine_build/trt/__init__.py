"""TensorRT plans built on the device: torch-free and onnx-free, Python 3.8 (runs in the Jetson image).

compat.py   importing tensorrt, the version gate (8.5 .. 10.x), network flags, engine I/O dtypes
device.py   the CUDA device this runs on (cuda-python, imported lazily)
profiles.py optimization profiles from the bundle manifest (decode S = 1, prefill S <= chunk)
cache.py    cache keys and plan records in the manifest
build.py    engines_ready() / build_engines(): the entry points
"""
