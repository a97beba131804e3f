#!/usr/bin/env bash
# The whole edgecls path on a built-in default: synthetic images -> train -> prune ->
# int8 export + parity -> bench -> camera loop on a generated video. Run by `make demo`.
#
# Everything goes under ${DEMO_DIR:-demo}/, which belongs to the demo: re-running it
# replaces the demo's own files (hence --force below), nothing else.
#
# With ../shared/pretrained/ beside the checkout (or EDGECLS_DEMO_WEIGHTS=PATH), the backbone
# starts from offline pretrained MobileNetV2 weights, as a real user's would from ImageNet;
# without it, it trains from random weights (a weak model, and the parity gate may fail:
# the demo says so and goes on).
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO=${DEMO_DIR:-demo}
PRETRAINED=${EDGECLS_DEMO_WEIGHTS:-../shared/pretrained/mobilenet_v2_1.0_160_no_top.h5}
mkdir -p "$DEMO"

step() { printf '\n==> %s\n' "$*"; }

if [ -f "$PRETRAINED" ]; then
  MODEL_ARGS=(--backbone mobilenet_v2 --alpha 1.0 --size 160 --weights "$PRETRAINED")
  echo "Backbone: MobileNetV2 1.0 at 160 px from $PRETRAINED"
else
  MODEL_ARGS=(--backbone mobilenet_v2 --alpha 0.35 --size 96 --weights none)
  echo "Backbone: MobileNetV2 0.35 at 96 px from random weights (no $PRETRAINED)"
fi

step "1/7 Synthetic image set (4 classes x 60 images)"
edgecls data synth "$DEMO/data" --classes 4 --per-class 60 --size 160 --seed 0 --force

step "2/7 Data check"
edgecls data check "$DEMO/data"

step "3/7 Train (head on the frozen backbone, then fine-tune)"
edgecls train "$DEMO/data" --out "$DEMO/run" "${MODEL_ARGS[@]}" \
  --epochs 6 --fine-tune-epochs 3 --batch-size 32 --force

step "4/7 Prune to 50% sparsity"
edgecls prune "$DEMO/run" --sparsity 0.5 --epochs 4 --force

step "5/7 Export: float32 (reference) and full int8 with the parity check"
edgecls export "$DEMO/run" --float32 --force
if ! edgecls export "$DEMO/run" --int8 --force; then
  echo "The parity gate failed (see the table above): the int8 file is kept in $DEMO/run/export/."
  echo "With random weights on a tiny set that is expected; with a pretrained backbone it is a finding."
fi
edgecls export "$DEMO/run" --int8 --pruned --force --no-parity

EXPORT="$DEMO/run/export"
step "6/7 Bench: int8 vs float32 at 1 and 2 threads"
edgecls bench "$EXPORT/model_float32.tflite" "$EXPORT/model_int8.tflite" \
  --threads 1,2 --runs 50 --warmup 10 --json "$DEMO/bench.json" --force

step "7/7 Camera loop on a generated 640x480 video (headless)"
python tools/make_demo_video.py "$DEMO/data" "$DEMO/camera.mp4" --frames 120
edgecls camera --model "$EXPORT/model_int8.tflite" --source "$DEMO/camera.mp4" --headless --threads 2 \
  --jsonl "$DEMO/camera.jsonl" --stats-json "$DEMO/camera_stats.json" --save "$DEMO/camera_annotated.mp4" --force

printf '\nDone. Everything is in %s/: run/ (model, metrics, plots, export/), bench.json, camera_*.\n' "$DEMO"
