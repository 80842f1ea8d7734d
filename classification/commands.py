"""Installed commands: every step as ``ct-<step>`` after ``pip install .``

Each command runs the step's ``main`` exactly as ``python -m <module>`` does
(one ``error:`` line and exit code 2 for a user mistake). The steps are imported
only when their command runs, so a command starts as fast as the step itself.
"""
from __future__ import annotations

import importlib

from classification import utils

COMMANDS = {
    'ct-aggregate-classifier-probs': 'classification.aggregate_classifier_probs',
    'ct-analyze-failed-images': 'classification.analyze_failed_images',
    'ct-cache-batchapi-outputs': 'classification.cache_batchapi_outputs',
    'ct-classify-sequences': 'classification.classify_sequences',
    'ct-create-classification-dataset': 'classification.create_classification_dataset',
    'ct-crop-detections': 'classification.crop_detections',
    'ct-csv-to-json': 'classification.csv_to_json',
    'ct-dataset-report': 'classification.dataset_report',
    'ct-detect-and-crop': 'classification.detect_and_crop',
    'ct-evaluate-model': 'classification.evaluate_model',
    'ct-export-camtrap-dp': 'classification.export_camtrap_dp',
    'ct-identify-mislabeled-candidates': 'classification.identify_mislabeled_candidates',
    'ct-json-to-azcopy-list': 'classification.json_to_azcopy_list',
    'ct-json-validator': 'classification.json_validator',
    'ct-map-classification-categories': 'classification.map_classification_categories',
    'ct-propose-label-spec': 'classification.propose_label_spec',
    'ct-merge-classification-detection-output': 'classification.merge_classification_detection_output',
    'ct-rollup-classifier-probs': 'classification.rollup_classifier_probs',
    'ct-run-classifier': 'classification.run_classifier',
    'ct-save-mislabeled': 'classification.save_mislabeled',
    'ct-train-classifier': 'classification.train_classifier',
    'ct-demo-project': 'data_management.demo_project',
    'ct-download-images': 'data_management.megadb.download_images',
    'ct-import-dataset': 'data_management.megadb.import_dataset',
    'ct-run-detector-batch': 'detection.run_detector_batch',
}


def _run(module: str) -> int:
    step = importlib.import_module(module)
    return utils.run_cli(step.main)


def aggregate_classifier_probs() -> int:
    return _run('classification.aggregate_classifier_probs')


def analyze_failed_images() -> int:
    return _run('classification.analyze_failed_images')


def cache_batchapi_outputs() -> int:
    return _run('classification.cache_batchapi_outputs')


def classify_sequences() -> int:
    return _run('classification.classify_sequences')


def create_classification_dataset() -> int:
    return _run('classification.create_classification_dataset')


def crop_detections() -> int:
    return _run('classification.crop_detections')


def csv_to_json() -> int:
    return _run('classification.csv_to_json')


def dataset_report() -> int:
    return _run('classification.dataset_report')


def detect_and_crop() -> int:
    return _run('classification.detect_and_crop')


def evaluate_model() -> int:
    return _run('classification.evaluate_model')


def export_camtrap_dp() -> int:
    return _run('classification.export_camtrap_dp')


def identify_mislabeled_candidates() -> int:
    return _run('classification.identify_mislabeled_candidates')


def json_to_azcopy_list() -> int:
    return _run('classification.json_to_azcopy_list')


def json_validator() -> int:
    return _run('classification.json_validator')


def map_classification_categories() -> int:
    return _run('classification.map_classification_categories')


def merge_classification_detection_output() -> int:
    return _run('classification.merge_classification_detection_output')


def propose_label_spec() -> int:
    return _run('classification.propose_label_spec')


def rollup_classifier_probs() -> int:
    return _run('classification.rollup_classifier_probs')


def run_classifier() -> int:
    return _run('classification.run_classifier')


def save_mislabeled() -> int:
    return _run('classification.save_mislabeled')


def train_classifier() -> int:
    return _run('classification.train_classifier')


def demo_project() -> int:
    return _run('data_management.demo_project')


def download_images() -> int:
    return _run('data_management.megadb.download_images')


def import_dataset() -> int:
    return _run('data_management.megadb.import_dataset')


def run_detector_batch() -> int:
    return _run('detection.run_detector_batch')
