#!/usr/bin/env bash
# The whole pipeline on a generated demo project, one step per command, as a
# user would type them. `make demo` runs this inside the project's .venv.
#
# Settings (environment variables, defaults in brackets):
#   DEMO_DIR [demo_output]       where everything goes (recreated on each run)
#   DEMO_SEED [0]                seed of the generated photos
#   DEMO_LOCATIONS [16]          labeled camera locations (two datasets)
#   DEMO_SEQUENCES [16]          sequences per location
#   DEMO_NEW_IMAGES [40]         new photos for the inference half
#   DEMO_WIDTH, DEMO_HEIGHT [1920, 1080]
#   DEMO_MODEL [resnet18]        or efficientnet-b0
#   DEMO_IMAGE_SIZE [96]         classifier input size
#   DEMO_EPOCHS [15]
#   DEMO_THREADS [2]             cropping threads
set -euo pipefail

DIR=${DEMO_DIR:-demo_output}
SEED=${DEMO_SEED:-0}
LOCATIONS=${DEMO_LOCATIONS:-16}
SEQUENCES=${DEMO_SEQUENCES:-16}
NEW_IMAGES=${DEMO_NEW_IMAGES:-40}
WIDTH=${DEMO_WIDTH:-1920}
HEIGHT=${DEMO_HEIGHT:-1080}
MODEL=${DEMO_MODEL:-resnet18}
SIZE=${DEMO_IMAGE_SIZE:-96}
EPOCHS=${DEMO_EPOCHS:-15}
THREADS=${DEMO_THREADS:-2}
PY=${PYTHON:-python}

step() { printf '\n=== %s\n' "$*" >&2; }

if [ -e "$DIR" ]; then
  if [ -f "$DIR/.demo_output" ]; then rm -rf "$DIR"; else
    echo "error: $DIR exists and was not made by the demo; set DEMO_DIR elsewhere" >&2; exit 2
  fi
fi
mkdir -p "$DIR" && touch "$DIR/.demo_output"
START=$(date +%s)
P=$DIR/project     # the generated camera-trap project
B=$DIR/base_logdir # classification dataset (BASE_LOGDIR)

step "1. generate the demo project (photos, COCO JSON, detections, taxonomy, label spec)"
$PY -m data_management.demo_project "$P" --seed "$SEED" --locations "$LOCATIONS" \
    --sequences-per-location "$SEQUENCES" --new-images "$NEW_IMAGES" \
    --width "$WIDTH" --height "$HEIGHT"

step "2. build the labeled-image database (MegaDB, SQLite) from the COCO files"
for ds in demo_forest demo_plains; do
  $PY -m data_management.megadb.import_dataset "$DIR/megadb.sqlite" --dataset "$ds" \
      --coco "$P/coco/$ds.json" --images-root "$P/images/$ds"
done

step "3. label specification: CSV -> JSON"
$PY -m classification.csv_to_json "$P/label_spec.csv" "$B/label_spec.json" --json-indent 1

step "4. json_validator: check the spec against the taxonomy, query MegaDB"
$PY -m classification.json_validator "$B/label_spec.json" "$P/taxonomy.csv" \
    --megadb "$DIR/megadb.sqlite" --output-dir "$B" --min-locs 3

step "5. cache the MegaDetector results of the images without ground-truth boxes"
for ds in demo_forest demo_plains; do
  $PY -m classification.cache_batchapi_outputs "$P/detections/$ds.json" --format detections \
      --dataset "$ds" --detector-output-cache-dir "$DIR/mdcache" --detector-version 5a
done

step "6. detect_and_crop: crop ground-truth and cached MegaDetector boxes"
$PY -m classification.detect_and_crop "$B/queried_images.json" "$B" \
    --detector-output-cache-dir "$DIR/mdcache" --detector-version 5a \
    --cropped-images-dir "$DIR/crops" --images-dir "$P/images" \
    --square-crops --threshold 0.5 --threads "$THREADS"

step "7. create_classification_dataset: CSV, label index, location-based splits"
$PY -m classification.create_classification_dataset "$B" --mode csv splits \
    --queried-images-json "$B/queried_images.json" --cropped-images-dir "$DIR/crops" \
    --detector-output-cache-dir "$DIR/mdcache" --detector-version 5a --threshold 0.5 \
    --min-locs 3 --val-frac 0.2 --test-frac 0.25 --method random --seed "$SEED"

step "8. train_classifier ($MODEL from scratch, ${SIZE}px, up to $EPOCHS epochs)"
$PY -m classification.train_classifier "$B" "$DIR/crops" --model-name "$MODEL" \
    --image-size "$SIZE" --epochs "$EPOCHS" --batch-size 32 --lr 1e-3 --label-weighted \
    --logdir "$B" --num-workers 1 --seed "$SEED"
RUN=$(dirname "$(ls -t "$B"/*/params.json | head -n 1)")
MODEL_TS=$(ls "$RUN"/ckpt_*_compiled.pt)   # train_classifier exports the best epoch
BEST="${MODEL_TS%_compiled.pt}.pt"

step "9. evaluate_model on the test split (also exports TorchScript)"
$PY -m classification.evaluate_model "$RUN/params.json" "$BEST" \
    --output-dir "$RUN/eval_test" --splits test

N=$DIR/new_photos
step "10. crop_detections on the new photos"
$PY -m classification.crop_detections "$P/new_photos/detections.json" "$N/crops" \
    --images-dir "$P/new_photos/images" --threshold 0.2 --square-crops \
    --threads "$THREADS" --logdir "$N"

step "11. run_classifier on the crops"
$PY -m classification.run_classifier "$MODEL_TS" "$N/crops" "$N/classifier_output.csv.gz" \
    --detections-json "$P/new_photos/detections.json" --threshold 0.2 \
    --classifier-categories "$B/label_index.json" \
    --batch-size 32 --num-workers 0

step "12. merge_classification_detection_output -> Timelapse JSON (taxonomy, rollup)"
$PY -m classification.merge_classification_detection_output \
    "$N/classifier_output.csv.gz" "$B/label_index.json" \
    --detection-json "$P/new_photos/detections.json" \
    --output-json "$N/detections_with_classifications.json" \
    --classifier-name "demo-$MODEL" --threshold 0.05 \
    --taxonomy-csv "$P/taxonomy.csv" --label-spec "$B/label_spec.json" \
    --rollup-threshold 0.9

step "13. classify_sequences: one label per sequence (EXIF times), smoothed Timelapse JSON"
$PY -m classification.classify_sequences "$N/detections_with_classifications.json" \
    "$N/sequences.csv" --images-dir "$P/new_photos/images" --max-gap-seconds 60 \
    --threshold 0.2 --smoothed-json "$N/detections_smoothed.json"

step "14. export_camtrap_dp: the results as a Camtrap DP 1.0 package (photo and event level)"
{ echo folder,deploymentID,latitude,longitude
  for d in "$P"/new_photos/images/*/; do d=$(basename "$d"); echo "$d,demo-$d,47.37,8.54"; done
} > "$N/deployments.csv"
$PY -m classification.export_camtrap_dp "$N/detections_smoothed.json" "$N/camtrap_dp" \
    --images-dir "$P/new_photos/images" --deployments "$N/deployments.csv" \
    --title "Demo survey" --contributor "Demo user" --utc-offset Z --threshold 0.2 \
    --media-root ../../project/new_photos/images --events --max-gap-seconds 60 \
    --logdir "$N"

step "15. identify_mislabeled_candidates: a contact sheet of crops to review"
$PY -m classification.identify_mislabeled_candidates "$RUN" --margin 0.5 \
    --splits train val test --contact-sheet "$RUN/mislabeled_review" \
    --cropped-images-dir "$DIR/crops"

step "summary"
$PY - "$RUN" "$MODEL_TS" "$N/detections_with_classifications.json" "$P/new_photos/ground_truth.json" \
    "$(( $(date +%s) - START ))" "$N/detections_smoothed.json" "$N/sequences.csv" <<'PYEOF'
import json, sys
import pandas as pd
run, model_ts, merged_path, truth_path, seconds, smoothed_path, seq_csv = sys.argv[1:]
metrics = pd.read_csv(f'{run}/overall_metrics.csv').set_index('split')
truth = json.load(open(truth_path))

def score(path):
    doc = json.load(open(path))
    names = doc['classification_categories']
    hits = total = 0
    for img in doc['images']:
        dets = [d for d in img.get('detections', []) if d.get('classifications')]
        if not dets or truth.get(img['file'], 'empty') == 'empty':
            continue
        best = max(dets, key=lambda d: d['conf'])
        total += 1
        hits += names[best['classifications'][0][0]] == truth[img['file']]
    return hits, total

hits, total = score(merged_path)
s_hits, s_total = score(smoothed_path)
seqs = pd.read_csv(seq_csv, keep_default_na=False)
merged = json.load(open(merged_path))
rolled = sum(1 for img in merged['images'] for d in img.get('detections', [])
             if d.get('classifications') and int(d['classifications'][0][0]) >= 2000000)
base = run.rsplit('/', 1)[0]
new = merged_path.rsplit('/', 1)[0]
print(f'dataset report:          {base}/dataset_report/index.html')
print(f'training run:            {run}')
print(f'TorchScript classifier:  {model_ts}')
print(f'evaluation files:        {run}/outputs_*.csv.gz, overall_metrics.csv, label_stats.csv')
print(f'crops to review:         {run}/mislabeled_review/index.html')
print(f'Timelapse JSON:          {merged_path} ({rolled} detections rolled up to a taxon)')
print(f'sequences:               {seq_csv} ({len(seqs)} sequences, '
      f'{(seqs["detections"] > 0).sum()} with an animal)')
print(f'smoothed Timelapse JSON: {smoothed_path}')
print(f'Camtrap DP package:      {new}/camtrap_dp/datapackage.json')
print(f'new photos with an animal classified correctly: {hits}/{total}, '
      f'after sequence smoothing: {s_hits}/{s_total}')
print(f'test-split top-1 accuracy: {metrics.loc["test", "acc_top1"]:.1f}%')
print(f'demo finished in {seconds} s')
print(f'open in a browser: {run}/report/index.html (the evaluation report)')
PYEOF
