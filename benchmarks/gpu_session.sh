#!/usr/bin/env bash
# One go on a GPU machine (GPU time is scarce): profile the qwen3-30b-a3b and deepseek-v3 expert
# shapes in bfloat16 on every visible GPU, with --validate, then a --quick recalibration against
# the first profile. Profiles land in $OUT (the device tool's return folder) or profiles/, named
# <gpu-model>-<date>-<model>.yaml; the log says what to copy into profiles/ and the README.
#
#   bash benchmarks/gpu_session.sh            # about 3-5 minutes on one H100/H200
#   FAST=1 bash benchmarks/gpu_session.sh     # shorter heat soak and fewer repeats (~1.5 min)
#   DRY_CPU=1 OUT=/tmp/s bash benchmarks/gpu_session.sh   # rehearse the plumbing on a CPU
#
# Needs python3 with torch (CUDA), numpy, pyyaml, rich, typer, nvidia-ml-py; nothing is
# installed or downloaded. Run from the repository root.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DEST=${OUT:-profiles}
mkdir -p "$DEST"
LOG="$DEST/gpu_session.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 CUDA_DEVICE_ORDER=PCI_BUS_ID
DEVICE=cuda; SMALL=()
if [ "${DRY_CPU:-0}" = 1 ]; then  # tiny sweep on the CPU: checks the script, measures nothing
  DEVICE=cpu; SOAK=0; REPEATS=2; TRIALS=2; SMALL=(--tokens 1,4,16)
elif [ "${FAST:-0}" = 1 ]; then
  SOAK=5; REPEATS=20; TRIALS=12
else
  SOAK=20; REPEATS=50; TRIALS=24
fi

say() { echo "== $*" | tee -a "$LOG"; }
: >"$LOG"
say "start $(date -u +%FT%TZ) on $(hostname)"
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=index,name,uuid,driver_version,power.limit,clocks.max.sm,temperature.gpu \
    --format=csv 2>&1 | tee -a "$LOG"
fi
DEVICE=$DEVICE $PY - <<'PYCHECK' 2>&1 | tee -a "$LOG" || exit 1
import os, torch, torch.nn.functional as F
if os.environ["DEVICE"] == "cpu":
    raise SystemExit(print(f"dry run on the CPU, torch {torch.__version__}"))
assert torch.cuda.is_available(), "no CUDA GPU visible to torch"
p = torch.cuda.get_device_properties(0)
mm = "public" if hasattr(F, "grouped_mm") else "private" if hasattr(torch, "_grouped_mm") else "no"
print(f"torch {torch.__version__}, {torch.cuda.device_count()} GPU(s), {p.name}, "
      f"cc {p.major}.{p.minor}, L2 {p.L2_cache_size >> 20} MiB, {mm} grouped_mm")
PYCHECK

# The full CLI may import packages this machine lacks (the solver's); profile-gpus needs none.
RUNNER='import sys, typer
from vibe_plan.errors import VibeError
from vibe_plan.commands.profile_gpus import profile_gpus
app = typer.Typer(add_completion=False)
app.command("profile-gpus")(profile_gpus)
app.callback()(lambda: None)
try:
    app(args=sys.argv[1:], prog_name="vibe")
except VibeError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)'
if $PY -c "import vibe_plan.cli" 2>/dev/null; then
  vibe() { $PY -m vibe_plan "$@"; }
else
  say "vibe_plan.cli does not import here; running profile-gpus through its own command"
  vibe() { $PY -c "$RUNNER" "$@"; }
fi

if [ "$DEVICE" = cuda ]; then
  GPU=$($PY -c "import torch; print(torch.cuda.get_device_name(0))" | tr 'A-Z' 'a-z' \
    | sed -e 's/^nvidia //' -e 's/[^a-z0-9]\+/-/g' -e 's/-$//')
  NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
else
  GPU=cpu-dry-run; NGPU=0
fi
DAY=$(date -u +%F)

profile() {  # model K extra-args...
  local model=$1 k=$2; shift 2
  local out="$DEST/$GPU-$DAY-$model.yaml"
  say "profile $model K=$k on $NGPU GPU(s) -> $out"
  local t0=$SECONDS
  vibe profile-gpus --model "$model" --device "$DEVICE" --dtype bfloat16 \
    --experts-per-gpu "$k" --repeats "$REPEATS" --warmup-s "$SOAK" "${SMALL[@]}" \
    --validate --validate-trials "$TRIALS" --quiet --out "$out" "$@" 2>&1 | tee -a "$LOG"
  say "rc=${PIPESTATUS[0]} in $((SECONDS - t0)) s"
}

# K = experts per GPU of an 8-GPU EP group: 128/8 for Qwen3-30B-A3B, 256/8 for DeepSeek-V3.
if [ "$DEVICE" = cuda ]; then
  profile qwen3-30b-a3b 16
  profile deepseek-v3 32
else
  profile qwen3-30b-a3b 2
  profile deepseek-v3 1
fi

base="$DEST/$GPU-$DAY-qwen3-30b-a3b.yaml"
if [ -f "$base" ]; then
  say "quick recalibration against $base"
  t0=$SECONDS
  vibe profile-gpus --quick --base "$base" --device "$DEVICE" --quiet \
    --out "$DEST/$GPU-$DAY-qwen3-30b-a3b-quick.yaml" 2>&1 | tee -a "$LOG"
  say "rc=${PIPESTATUS[0]} in $((SECONDS - t0)) s (scale should be near 1: same GPU, minutes later)"
fi

say "grouped_mm vs per-expert loop (figures for the README)"
if [ "$DEVICE" = cuda ]; then
  $PY benchmarks/gpu_profile_bench.py --device cuda --repeats 20 2>&1 | tee -a "$LOG"
  nvidia-smi --query-gpu=index,clocks.sm,temperature.gpu,power.draw --format=csv 2>&1 | tee -a "$LOG"
fi
say "done $(date -u +%FT%TZ); copy $DEST/$GPU-$DAY-*.yaml into profiles/ and record the" \
  "validation figures (mean/worst abs % error) in profiles/README.md"
