#!/usr/bin/env bash
# Creates bench/.venv-original with the original pipeline's scripts (the
# `megadetector` package: classification/, and detection/ with the YOLOv5 code
# its PyTorch detector imports) for side-by-side benchmarks.
# Kept apart from the project's .venv: megadetector pins YOLOv5 and other
# packages we do not want; --no-deps plus what its scripts import.
set -euo pipefail
cd "$(dirname "$0")"
V=.venv-original
if [ ! -x "$V/bin/python" ]; then python3 -m venv "$V"; fi
"$V/bin/pip" install --quiet --upgrade pip
"$V/bin/pip" install --quiet torch==2.14.1 torchvision==0.29.1
# megadetector pins ultralytics-yolov5, whose source package downloads its README
# while building (fails offline); the `yolov5` package has the same letterbox,
# scale_boxes and xyxy2xywh that MegaDetector's pytorch_detector imports
"$V/bin/pip" install --quiet --no-deps megadetector==10.0.28 yolov5==7.0.14
"$V/bin/pip" install --quiet pandas pillow tqdm azure-storage-blob scikit-learn matplotlib \
    tensorboard humanfriendly jsonpickle python-dateutil requests send2trash
# what run_detector_batch and YOLOv5's model code import (pytest: megadetector's
# path_utils imports it)
"$V/bin/pip" install --quiet "setuptools<81" opencv-python-headless pyyaml psutil seaborn \
    ultralytics pytest
"$V/bin/python" -c "import megadetector.classification.crop_detections, megadetector.classification.run_classifier; print('original pipeline ready')"
"$V/bin/python" -c "import yolov5.models.yolo, megadetector.detection.pytorch_detector, megadetector.detection.run_detector_batch; print('original detector ready')"
