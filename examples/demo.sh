#!/usr/bin/env bash
# `make demo`: the whole pipeline on the embedded examples. Inputs under examples/ are SYNTHETIC or
# tiny and random (see examples/README.md); the commands are the ones you run on real profiles.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=examples/out
mkdir -p "$OUT"
G=examples/gpus.yaml
R=examples/routing.npz

echo "== 1. vibe solve: Qwen3-30B-A3B-shaped, 128 experts + 8 redundant on 8 GPUs (synthetic inputs)"
vibe solve --gpus $G --routing $R --redundant 8 --out $OUT/placement.json \
  --export sglang=$OUT/sglang-init-expert-location.json \
  --export trtllm=$OUT/trtllm-load-balancer.yaml \
  --export eplb=$OUT/eplb-tensors.json --quiet
vibe solve --gpus $G --routing $R --redundant 8 --method eplb --out $OUT/eplb.json --quiet >/dev/null
vibe solve --gpus $G --routing $R --redundant 8 --method linear --out $OUT/linear.json --quiet >/dev/null

echo
echo "== 2. vibe evaluate: the plans on held-out batches (the SGLang export scores like the plan)"
vibe evaluate --gpus $G --routing examples/routing-heldout.npz \
  $OUT/placement.json $OUT/eplb.json $OUT/linear.json $OUT/sglang-init-expert-location.json \
  --csv $OUT/evaluate.csv

echo
echo "== 2b. the same plans under SGLang's static dispatch (each EP rank sends to one replica)"
vibe evaluate --gpus $G --routing examples/routing-heldout.npz \
  $OUT/placement.json $OUT/eplb.json --dispatch static

echo
echo "== 3. profiling stages on a TINY RANDOM DeepSeek-V3-shaped model, on this CPU"
python examples/make_tiny_model.py --out examples/tiny-model
vibe profile-routing --model examples/tiny-model --trace examples/prompts.jsonl \
  --out $OUT/tiny-routing.npz --batch-tokens 128 --quiet
vibe profile-gpus --model examples/tiny-model --device cpu --out $OUT/cpu.yaml --quiet
python examples/fleet_from_curve.py $OUT/cpu.yaml --gpus 4 --spread 0.10 --out $OUT/tiny-fleet.yaml
vibe solve --gpus $OUT/tiny-fleet.yaml --routing $OUT/tiny-routing.npz --out $OUT/tiny-placement.json \
  --export sglang=$OUT/tiny-sglang.json --quiet

echo
echo "== 4. vibe report: one HTML page with the whole picture of the plans above (held-out batches)"
vibe report --gpus $G --routing examples/routing-heldout.npz \
  $OUT/placement.json $OUT/eplb.json $OUT/linear.json --out $OUT/report

echo
echo "demo outputs are in $OUT/; the report: $OUT/report/index.html (open it in a browser)"
