#!/usr/bin/env bash
# Creates bench/.venv-original with the original pipeline's scripts (the
# `megadetector` package, classification/ only) for side-by-side benchmarks.
# Kept apart from the project's .venv: megadetector pins YOLOv5 and other
# packages we do not want; --no-deps plus what its classification scripts import.
set -euo pipefail
cd "$(dirname "$0")"
V=.venv-original
if [ ! -x "$V/bin/python" ]; then python3 -m venv "$V"; fi
"$V/bin/pip" install --quiet --upgrade pip
"$V/bin/pip" install --quiet torch==2.14.1 torchvision==0.29.1
"$V/bin/pip" install --quiet --no-deps megadetector==10.0.28
"$V/bin/pip" install --quiet pandas pillow tqdm azure-storage-blob scikit-learn matplotlib \
    tensorboard humanfriendly jsonpickle python-dateutil requests send2trash
"$V/bin/python" -c "import megadetector.classification.crop_detections, megadetector.classification.run_classifier; print('original pipeline ready')"
