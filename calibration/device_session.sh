#!/usr/bin/env bash
# What one call on a lent GPU runs, by stage, so that each call does a lot and ends inside its
# 10-minute limit (see docs/calibration.md, "Accuracy on a real GPU"). Run from the repository root:
#
#   bash calibration/device_session.sh e2e        # e2e steps, their shapes calibrated, GPU tests
#   bash calibration/device_session.sh v3 FAMILIES [--quick]   # V3's shapes into $OUT/h100-v3.json
#   bash calibration/device_session.sh rows       # out/shapes/*.json's shapes merged into it; GPU tests
#   bash calibration/device_session.sh kernels ["TAG ARGS" ...]   # e2e GPU time by kernel class; FP8 refusals
#   bash calibration/device_session.sh measure NAME.json SHAPES FAMILIES [args]   # into out/NAME.json
#
# Results go under $OUT (default ./out): profiles, the e2e reports and one log. Every step has its
# own time limit, so one that hangs costs its share of the call, not the call. A profile in
# ./out/h100-v3.json (carried from an earlier call) is copied to $OUT first, so ``--update`` merges
# into it. Needs python3 with torch and Triton; simpy may come on PYTHONPATH from ./.whl.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:$PWD/.whl${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
log="$OUT/session.log"
say() { echo "== $(date +%T) $*" | tee -a "$log"; }
stage=${1:?usage: device_session.sh e2e|v3 FAMILIES [--quick]|rows|kernels|measure ...}
shift
case $stage in e2e|v3|rows|kernels|measure) ;; *) echo "unknown stage $stage; allowed: e2e, v3, rows, kernels, measure" >&2; exit 2;; esac
shopt -s nullglob
# A profile carried in ./out (from an earlier call) goes to $OUT first, so that --update merges into it.
carry_profile() { [ -f "out/$1" ] && [ "$OUT" != "$PWD/out" ] && cp "out/$1" "$OUT/"; }
# calibrate SECONDS ARGS...: one run of the harness, its per-item progress and torch's warnings dropped.
calibrate() {
  local seconds=$1; shift
  timeout "$seconds" python3 -m calibration.runner "$@" 2>&1 | grep -v -e '^\[.*\] [0-9]*/[0-9]*$' -e Warning \
    -e scaled_dot_product | tee -a "$log"
}
# e2e FILE SECONDS TAG ARGS...: one e2e_step report into $OUT/FILE, and its step time (and kernel classes) logged.
e2e() {
  local file=$1 seconds=$2 tag=$3; shift 3
  say "e2e $tag $*"
  timeout "$seconds" python3 -m calibration.e2e_step --preset gpu "$@" > "$OUT/$file" 2>>"$log" || say "e2e $tag failed: $?"
  python3 -c "import json; r=json.load(open('$OUT/$file')); k=r.get('kernels', {});
print('$tag', round(r['measured_step_ms'], 2), 'ms', {x: k[x] for x in ('ms_per_step', 'busy_ms', 'gaps_ms', 'error') if x in k})" \
    2>&1 | tee -a "$log"
}
gpu_tests() {
  say "gpu tests"
  timeout "$1" python3 -m pytest tests/test_calibration.py -m gpu -q -p no:cacheprovider --tb=short -W ignore 2>&1 \
    | tail -40 | tee -a "$log"
}

say "stage $stage on $(hostname)"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu \
  --format=csv 2>&1 | tee -a "$log"
python3 -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.version.cuda, 'triton', triton.__version__)" 2>&1 | tee -a "$log"

case $stage in
e2e)
  # 1. One training step of the e2e model at three sizes (layers, tokens), median of 5 after 2 warm-ups.
  for cfg in "L4 --layers 4" "L8 --layers 8" "L4B2 --layers 4 --batch 2"; do
    set -- $cfg
    e2e "e2e_$1.json" 60 "$@"
  done
  # 2. The e2e model's own shapes (its scenario), calibrated with the quick sweep; 3. the GPU-only tests.
  python3 -c "import json; json.dump(json.load(open('$OUT/e2e_L4.json'))['scenario'], open('$OUT/e2e.yaml', 'w'))"
  say "calibrate e2e shapes"
  calibrate 300 --quick --shapes "$OUT/e2e.yaml" --sustain-seconds 10 \
    --families gemm,grouped_gemm,attention,memory_bound,sm_scaling,sustained --out "$OUT/h100-e2e.json"
  rm -f "$OUT/e2e.yaml"
  gpu_tests 150
  ;;
v3)
  families=${1:?families}
  shift
  carry_profile h100-v3.json
  for fam in ${families//,/ }; do
    say "calibrate v3 $fam $*"
    calibrate "${FAMILY_SECONDS:-540}" --shapes deepseek-v3 --families "$fam" "$@" --update --out "$OUT/h100-v3.json"
  done
  ;;
rows)
  # Every scenario file in out/shapes (e.g. the H100 rows of the validation set, written by
  # calibration/validation_shapes.py) measured into the V3 profile, one scenario per run (--update
  # keeps the rows of the others), after the GPU-only tests.
  gpu_tests 120
  carry_profile h100-v3.json
  for f in out/shapes/*.json; do
    say "calibrate $(basename "$f" .json)"
    calibrate "${SCENARIO_SECONDS:-100}" --quick --shapes "$f" --families gemm,grouped_gemm,attention --update \
      --out "$OUT/h100-v3.json"
  done
  ;;
kernels)
  # Where the e2e step's GPU time goes, by kernel class (torch.profiler), and the FP8 forms refused.
  # Each argument is one configuration, "TAG e2e_step-arguments"; these five when none is given.
  if [ $# -gt 0 ]; then cfgs=("$@"); else cfgs=("L4 --layers 4" "L8 --layers 8" "L4fused --layers 4 --optimizer fused"
    "L8fused --layers 8 --optimizer fused" "L4B2fused --layers 4 --batch 2 --optimizer fused"); fi
  for cfg in "${cfgs[@]}"; do
    set -- $cfg
    e2e "e2e_kernels_$1.json" 200 "$@" --kernels
  done
  python3 -c "import torch; from calibration.kernels.gemm import probe_fp8; print('\n'.join(probe_fp8(torch.device('cuda')).tried))" \
    2>&1 | tee -a "$log"
  ;;
measure)
  # One scenario's shapes measured into one profile: measure NAME.json SHAPES FAMILIES [runner args],
  # merged (--update) into out/NAME.json when that was carried along.
  name=${1:?profile file name}; shapes=${2:?shapes}; families=${3:?families}
  shift 3
  carry_profile "$name"
  say "calibrate $shapes into $name ($families) $*"
  calibrate "${FAMILY_SECONDS:-400}" --shapes "$shapes" --families "$families" "$@" --update --out "$OUT/$name"
  ;;
esac
say "done"
