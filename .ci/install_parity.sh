#!/usr/bin/env bash
# Installs what the CXAS parity tests (tests/modeling/test_cxas_parity.py) need: the reference implementations of the CXAS
# segmenter from `cxas` and `torchxrayvision`, random weights only (nothing is downloaded at test time).
#
# Why not `pip install cxas torchxrayvision`:
#   * cxas pins pydicom<3 and pulls pydicom_seg -> numpy<2, and an unpinned torchvision drags in a multi-GB CUDA torch;
#   * PyPI's torchvision wheel is a CUDA build: next to the CPU torch wheel `import torchvision` fails
#     ("operator torchvision::nms does not exist"), and transformers imports torchvision as soon as it is installed,
#     which breaks every `from transformers import ...` in the venv.
# So the three packages go, without their dependencies, into a separate folder `<venv>/parity-site` that is NOT on
# sys.path; only tests/reference_models.py puts it there, after declaring the two missing torchvision ops
# (tests/torchvision_shim.py). Their remaining import-time dependencies (scikit-image, imageio for
# torchxrayvision) are ordinary, numpy-2-compatible packages and go into the venv itself.
#
# usage: .ci/install_parity.sh [path/to/venv/bin/python]
set -euo pipefail
PY="${1:-.venv/bin/python}"
TARGET="$("$PY" -c 'import sys; print(sys.prefix)')/parity-site"
"$PY" -m pip install -q "scikit-image>=0.22" imageio
"$PY" -m pip install -q --no-deps --upgrade --target "$TARGET" torchvision==0.28.0 cxas==0.0.20 torchxrayvision==1.5.7
echo "parity references installed in $TARGET"
