#!/usr/bin/env bash
# The performance suite at the smol and LLaVA-1.5-7B shapes, bf16, on one GPU (random weights built from configs).
#
#   benchmarks/perf/gpu.sh [OUT.json]          # default: docs/results/performance-gpu.json; the tables go to stdout
#
# NOT RUN YET: written on the 2-core CPU machine, and no GPU was lent to the task that wrote it (the device tool's
# `status` said so). When one is, run it there and record the numbers (docs/results/performance.md).
#
# Sections (benchmarks/perf/run.py --device cuda): parameters per arm (meta device); forward and greedy generation
# (32 new tokens), batch 1 and 8, ASaRG vs the LLaVA it was grown from, with precomputed seg inputs and with the
# CXAS-compatible ResNet-50 U-Net in the loop (a hook checks it runs once per generate); the segmenter per image;
# peak GPU memory of inference, each in a fresh process. Expected to take 3-4 minutes on an H100/H200-class GPU
# (the 7B model is built directly in bf16, 14 GB, three times: once in-process, once per memory process); a
# 5-minute timeout stops it otherwise. Times are wall clock after torch.cuda.synchronize().
#
# Needs, on that machine: python with a CUDA build of torch and transformers >= 5.20, < 6 (pyproject.toml), run
# from a checkout of this repository. It refuses, saying why, without them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT=${1:-docs/results/performance-gpu.json}

if ! "$PY" - <<'CHECK'
import sys

try:
    import torch
    import transformers
except ImportError as error:
    sys.exit(f"gpu.sh: {error}: this machine's python lacks torch or transformers")
if not torch.cuda.is_available():
    sys.exit(f"gpu.sh: no CUDA device (torch {torch.__version__}, cuda build: {torch.version.cuda}); run it on a GPU machine")
major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
if not (5, 20) <= (major, minor) < (6, 0):
    sys.exit(f"gpu.sh: transformers {transformers.__version__}; the model needs >= 5.20, < 6")
print(f"gpu.sh: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, transformers {transformers.__version__}")
CHECK
then
    echo "gpu.sh: refusing to run (see above)" >&2
    exit 2
fi

exec timeout 300 "$PY" benchmarks/perf/run.py --device cuda --dtype bfloat16 --shapes smol,llava-1.5-7b \
    --only parameters,latency,segmenter,memory --out "$OUT"
