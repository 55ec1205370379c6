# Shared by scripts/*: create .venv (Python 3.11+) and install the project into it.
# torch==2.13.0 first: on CPU machines it is a local CPU wheel; a bare `torch` requirement
# (pulled by the `export` extra) would otherwise fetch a multi-GB CUDA build.
set -euo pipefail
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PY --version)"
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# The `cpu` extra is always added: ONNX Runtime is an install choice (pyproject.toml), and these scripts
# set up a CPU machine (the Jetson image installs NVIDIA's GPU build instead: docker/Dockerfile.jetson).
install_project() {  # $1: extras, e.g. "export,test" ("" for the runtime alone: no torch)
  if [ -n "$1" ] && ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    echo "==> installing torch==2.13.0 (CPU)"
    .venv/bin/pip install -q torch==2.13.0
  fi
  echo "==> installing tinyllava-med[cpu${1:+,$1}]"
  .venv/bin/pip install -q -e ".[cpu${1:+,$1}]"
}
