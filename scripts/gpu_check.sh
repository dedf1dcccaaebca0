#!/usr/bin/env bash
# The one prepared check for a lent GPU (H100/H200): CUDA tests, the benchmark, a short training.
#
#   bash scripts/gpu_check.sh prepare   # here, on a machine with pip and ../shared: fills .gpu_carry/
#   bash scripts/gpu_check.sh [run]     # there, in the repository root; results go to $OUT
#
# `prepare` puts what the GPU machine lacks into .gpu_carry/ (ignored through .git/info/exclude):
# the PyAV wheel for its Python 3.12 (its image has no PyAV) and a slice of ISIC 2017 for the
# training run. The device call carries it:  carry: [".gpu_carry"], command: bash scripts/gpu_check.sh
#
# `run` writes at most 8 files under $OUT (default ./gpu_out): env.txt, pytest_cuda.log,
# bench_cuda.json, bench_cuda.log, train.log, train_log.jsonl, curves.png, summary.txt.
# Each step has its own time limit (150 + 240 + 120 s: under the 600 s of one device call); a step
# that fails or times out is recorded in summary.txt and the next one still runs.
# Steps can be chosen: STEPS="tests bench train" (default all three).
set -u
cd "$(dirname "$0")/.."
CARRY=.gpu_carry
TRAIN_IMAGES=${TRAIN_IMAGES:-600}  # ISIC 2017 training pairs carried (the val split goes whole)

prepare() {
  set -e
  grep -qxF "/$CARRY/" .git/info/exclude 2>/dev/null || echo "/$CARRY/" >> .git/info/exclude
  rm -rf "$CARRY" && mkdir -p "$CARRY/whl" "$CARRY/isic2017"
  local av_version
  av_version=$(python3 -c 'import av; print(av.__version__)')
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$CARRY/whl" "av==$av_version"
  local data=${DATA:-../shared/data/isic2017}
  for split in train val; do
    mkdir -p "$CARRY/isic2017/$split/images" "$CARRY/isic2017/$split/masks"
    local n=$([ "$split" = train ] && echo "$TRAIN_IMAGES" || echo 100000)
    find "$data/$split/images" -maxdepth 1 -name '*.jpg' | sort | head -n "$n" | while read -r img; do
      local stem
      stem=$(basename "$img" .jpg)
      cp "$img" "$CARRY/isic2017/$split/images/"
      cp "$data/$split/masks/${stem}_segmentation.png" "$CARRY/isic2017/$split/masks/"
    done
  done
  du -sh "$CARRY"/* && echo "ready: carry [\"$CARRY\"] and run: bash scripts/gpu_check.sh"
}

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log its exit status
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/summary.txt"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  echo "   $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
  return $rc
}

run() {
  OUT=${OUT:-gpu_out}
  mkdir -p "$OUT"
  export PYTHONUNBUFFERED=1
  : > "$OUT/summary.txt"
  {
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name())'
    python3 -c 'import cupy; print("cupy", cupy.__version__)' 2>&1
    python3 -c 'import torchvision; print("torchvision", torchvision.__version__)' 2>&1
    git log -1 --format='commit %H %s' 2>/dev/null
  } > "$OUT/env.txt" 2>&1
  if compgen -G "$CARRY/whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site "$CARRY"/whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  python3 -c 'import av; print("pyav", av.__version__)' >> "$OUT/env.txt" 2>&1
  cat "$OUT/env.txt"
  local steps=${STEPS:-tests bench train}
  for s in $steps; do
    case $s in
      tests)
        step "pytest -m cuda" 150 python3 -m pytest -m cuda -q -p no:cacheprovider \
          --continue-on-collection-errors tests \
          > "$OUT/pytest_cuda.log" 2>&1
        tail -n 25 "$OUT/pytest_cuda.log" ;;
      bench)
        step "stream.bench" 240 python3 -m stream.bench --device cuda \
          --json "$OUT/bench_cuda.json" > "$OUT/bench_cuda.log" 2>&1
        tail -n 60 "$OUT/bench_cuda.log" ;;
      train)
        if [ -d "$CARRY/isic2017/train" ]; then
          local run_dir=runs/gpu  # never reuse or delete an existing run folder
          [ -e "$run_dir" ] && run_dir=runs/gpu-$(date +%Y%m%d-%H%M%S)
          step "slsnet.train" 120 python3 -m slsnet.train --data "$CARRY/isic2017" \
            --out "$run_dir" --device cuda --epochs "${EPOCHS:-5}" --batch-size 8 \
            > "$OUT/train.log" 2>&1
          tail -n 12 "$OUT/train.log"
          cp "$run_dir/log.jsonl" "$OUT/train_log.jsonl" 2>/dev/null
          cp "$run_dir/curves.png" "$OUT/curves.png" 2>/dev/null
        else
          echo "== slsnet.train skipped: no $CARRY/isic2017 (run 'prepare' here first)" \
            | tee -a "$OUT/summary.txt"
        fi ;;
      *) echo "error: unknown step '$s' (tests, bench, train)" >&2; exit 2 ;;
    esac
  done
  echo "== summary"; cat "$OUT/summary.txt"
}

case ${1:-run} in
  prepare) prepare ;;
  run) run ;;
  *) echo "error: unknown mode '$1' (prepare or run)" >&2; exit 2 ;;
esac
