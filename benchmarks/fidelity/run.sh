#!/usr/bin/env bash
# Before/after of issue 12's changes on the shapes world: fine-tunes of the demo export (run `make demo`
# first), one seed (0), 200 steps of batch 64, each scored on the shapes probes and zero-shot heldout.
# Writes benchmarks/fidelity/results/<name>.json (skips a run whose result exists: resumable).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=.venv/bin
OUT=benchmarks/fidelity/results
mkdir -p "$OUT" runs/fidelity
run() {  # name recipe overrides...
  local name=$1 recipe=$2; shift 2
  [ -f "$OUT/$name.json" ] && { echo "# $name: done"; return; }
  rm -rf "runs/fidelity/$name"
  $BIN/vlp-train --config "configs/$recipe.yaml" output_dir="runs/fidelity/$name" train.threads=2 \
    "eval.zeroshot=[data/shapes/zeroshot:heldout]" "$@" > "runs/fidelity/$name.log" 2>&1
  $BIN/vlp-eval compositional --model "local-dir:runs/fidelity/$name/export" --benchmark shapes \
    --data data/shapes/compositional --out "runs/fidelity/$name/shapes.json" > /dev/null
  $BIN/python benchmarks/fidelity/collect.py "$name" "runs/fidelity/$name" "$OUT/$name.json" "$@"
}
$BIN/vlp-data shapes --out data/shapes
run clip_control negclip "objective.terms={clip: 1.0}" data.negatives=0 data.neighbours=false
run negclip_before negclip data.neighbours=false train.grad_clip=1.0
run negclip_noclip negclip data.neighbours=false
run negclip_twins negclip
run degla_random degla data.negative_sampling=random
run degla_fixed degla
$BIN/python benchmarks/fidelity/collect.py --table "$OUT"
