#!/usr/bin/env bash
# The placement CI job: turn the profiles kept in the repository into placement files with the
# light core (no torch), check the new plan against the committed one, and fail when it regresses.
# GitHub Actions runs it (placement.yml); it runs the same way locally, with `vibe` on PATH:
#
#   bash examples/ci/placement.sh OUTDIR
#
# Environment (all optional): GPUS, ROUTING (the profiles; default: examples/gpus.yaml and
# examples/routing.npz), COMMITTED (the placement to hold the line against; default:
# examples/ci/placement.json, written by this script's own solve command), MAX_REGRESSION (allowed
# slowdown, default 0.01), SOLVE_ARGS (extra vibe solve options, e.g. "--redundant 8").
# Exit codes: 0 the plan is valid and not slower; 1 it regressed or is invalid; 2 bad input.
set -euo pipefail

out="${1:?usage: bash examples/ci/placement.sh OUTDIR}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
gpus="${GPUS:-$root/examples/gpus.yaml}"
routing="${ROUTING:-$root/examples/routing.npz}"
committed="${COMMITTED:-$here/placement.json}"
max_regression="${MAX_REGRESSION:-0.01}"
read -r -a solve_args <<< "${SOLVE_ARGS:-}"

if ! command -v vibe >/dev/null 2>&1; then
    # The light package only: solve, evaluate and validate never import torch.
    if [ -f "$root/pyproject.toml" ]; then pip install "$root"; else pip install vibe-plan; fi
fi
mkdir -p "$out"

# 1. Plan. With the default inputs this is the command that wrote the committed placement.json
#    (same inputs and options, same bytes).
vibe solve --gpus "$gpus" --routing "$routing" --out "$out/placement.json" --quiet \
    --export sglang="$out/sglang-init-expert-location.json" \
    --export trtllm="$out/trtllm-load-balancer.yaml" "${solve_args[@]}"

# 2. Score the new plan next to the committed one on every batch of the routing profile.
vibe evaluate --gpus "$gpus" --routing "$routing" "$out/placement.json" "$committed" \
    --csv "$out/evaluate.csv"

# 3. Fail when the new plan is invalid for the profiles or slower than the committed one.
vibe validate "$out/placement.json" --gpus "$gpus" --routing "$routing" \
    --against "$committed" --max-regression "$max_regression" | tee "$out/validate.txt"

if cmp -s "$out/placement.json" "$committed"; then
    echo "the plan is byte-identical to $committed"
else
    echo "the plan differs from $committed (and is not slower); commit $out/placement.json to update it"
fi
