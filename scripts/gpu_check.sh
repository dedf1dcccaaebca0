#!/usr/bin/env bash
# The one prepared check for a GPU machine (H100/H200): CUDA tests, the benchmark, training.
#
#   bash scripts/gpu_check.sh prepare   # here: fills .gpu_carry/ (code snapshot, data, wheels)
#   bash scripts/gpu_check.sh dry-run   # here or there: prints what `run` would do, runs nothing
#   bash scripts/gpu_check.sh [run]     # there, in the repository root; results go to $OUT
#
# `prepare` puts into .gpu_carry/ (ignored through .git/info/exclude): src/, the committed tree
# (git archive HEAD, weights linked, not copied), so uncommitted edits never reach the GPU;
# isic2017/ (all of ISIC 2017 when TRAIN is set, for the train step); whl/, the PyAV wheel for the
# GPU machine's Python 3.12 unless NO_AV=1 (its image has no PyAV; the wheel is 36 MB of the
# 64 MB budget for what travels to the GPU machine, so a run that trains on all the data leaves
# it out). Copy the repository with .gpu_carry/ to the GPU machine and run there:
#   bash .gpu_carry/src/scripts/gpu_check.sh
#
# Steps, in STEPS order (default "tests bench", about 4 minutes):
#   bench  python -m stream.bench --device cuda, alone on the GPU (limit BENCH_S, 150 s;
#          BENCH_ONLY picks its sections, e.g. model,preprocess,frame where PyAV is absent)
#   train  scripts/gpu_train.py in the background for TRAIN_S seconds (default 300): later steps
#          run beside it, so put bench first; INIT=weights/slsnet_isic2017.pt fine-tunes those
#          weights (its candidate runs) instead of training from scratch
#   tests  pytest -m cuda on the files that hold GPU tests (limit TESTS_S, 120 s)
# At most 8 files come back under $OUT: summary.txt (the machine first), pytest_cuda.log,
# bench_cuda.json, bench_cuda.log, train.tar.gz (logs, plans, curves of every run), and each
# candidate's <name>_best_gan.pt (its best adversarial epoch; <name>_best.pt for a run without
# one) (main and its variants, or the fine-tuning runs; at most three). A step that fails or times out is recorded and the next one runs.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
CARRY=${CARRY:-.gpu_carry}
PYTHON=${PYTHON:-python3}

prepare() {
  set -e
  cd "$here"
  grep -qxF "/$CARRY/" .git/info/exclude 2>/dev/null || echo "/$CARRY/" >> .git/info/exclude
  rm -rf "$CARRY" && mkdir -p "$CARRY/src" "$CARRY/whl"
  git archive HEAD | tar -x -C "$CARRY/src" --exclude=weights
  ln -s ../../weights "$CARRY/src/weights"
  if [ "${NO_AV:-0}" != 1 ]; then
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d "$CARRY/whl" \
      "av==$("$PYTHON" -c 'import av; print(av.__version__)')"
  fi
  if [ -n "${TRAIN:-}" ]; then
    local data=${DATA:-../shared/data/isic2017}
    mkdir -p "$CARRY/isic2017"
    cp -r "$data/train" "$data/val" "$CARRY/isic2017/"
  fi
  du -sh "$CARRY"/* && echo "ready: copy the repository with $CARRY/ to the GPU machine and run: bash $CARRY/src/scripts/gpu_check.sh"
}

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log its exit status
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/summary.txt"
  if [ -n "${DRY:-}" ]; then return 0; fi
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  echo "   $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
  return $rc
}

run() {
  cd "$here"
  local carry=$here/$CARRY
  [ -d "$carry" ] || carry=$(dirname "$here")  # run from .gpu_carry/src: the carry is its parent
  OUT=${OUT:-$here/gpu_out}
  mkdir -p "$OUT"
  export PYTHONUNBUFFERED=1 PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
  : > "$OUT/summary.txt"
  if compgen -G "$carry/whl/*.whl" > /dev/null && [ -z "${DRY:-}" ]; then
    # PyAV from the carried wheel, ahead of anything on the machine's path
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site "$carry"/whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
  fi
  if [ -z "${DRY:-}" ]; then
    {
      date -u
      nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
      "$PYTHON" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name())'
      "$PYTHON" -c 'import cupy; print("cupy", cupy.__version__)' 2>&1
      "$PYTHON" -c 'import av; print("pyav", av.__version__, av.__file__)' 2>&1 | tail -1
      nproc
    } >> "$OUT/summary.txt" 2>&1
    cat "$OUT/summary.txt"
  fi
  local steps=${STEPS:-tests bench} train_pid=""
  for s in $steps; do
    case $s in
      bench)
        step "stream.bench" "${BENCH_S:-150}" "$PYTHON" -m stream.bench --device cuda \
          ${BENCH_ONLY:+--only "$BENCH_ONLY"} --json "$OUT/bench_cuda.json" > "$OUT/bench_cuda.log" 2>&1
        tail -n 60 "$OUT/bench_cuda.log" 2>/dev/null ;;
      train)
        if [ ! -d "$carry/isic2017/train" ]; then
          echo "== train skipped: no $carry/isic2017 (TRAIN=1 bash scripts/gpu_check.sh prepare)" \
            | tee -a "$OUT/summary.txt"
          continue
        fi
        echo "== train (${TRAIN_S:-300} s, in the background)" | tee -a "$OUT/summary.txt"
        [ -n "${DRY:-}" ] && continue
        "$PYTHON" scripts/gpu_train.py --data "$carry/isic2017" --out /tmp/gpu_runs \
          --seconds "${TRAIN_S:-300}" ${INIT:+--init "$INIT"} > "$OUT/train_driver.log" 2>&1 &
        train_pid=$! ;;
      tests)
        # only the files that hold GPU tests: the others need Gradio, Selenium or ONNX Runtime,
        # which the GPU machine does not have
        local files
        files=$(grep -rlE --include='test_*.py' 'mark\.cuda' tests | sort | tr '\n' ' ')
        # shellcheck disable=SC2086
        step "pytest -m cuda" "${TESTS_S:-120}" "$PYTHON" -m pytest -m cuda -q -p no:cacheprovider \
          -o addopts="" --continue-on-collection-errors $files \
          > "$OUT/pytest_cuda.log" 2>&1
        tail -n 40 "$OUT/pytest_cuda.log" 2>/dev/null ;;
      *) echo "error: unknown step '$s' (tests, bench, train)" >&2; exit 2 ;;
    esac
  done
  if [ -n "$train_pid" ]; then
    wait "$train_pid"
    echo "   train: exit $?" | tee -a "$OUT/summary.txt"
    cat "$OUT/train_driver.log" >> "$OUT/summary.txt"
    local run best
    for run in /tmp/gpu_runs/main /tmp/gpu_runs/main_* /tmp/gpu_runs/ft_*; do  # candidates only
      for best in best_gan best; do  # the game's best epoch, what slsnet.card ships
        if [ -f "$run/$best.pt" ]; then cp "$run/$best.pt" "$OUT/$(basename "$run")_$best.pt"; break; fi
      done
    done
    (cd /tmp/gpu_runs && tar -czf "$OUT/train.tar.gz" --exclude='*.pt' .)
    rm -f "$OUT/train_driver.log"
  fi
  echo "== summary"; cat "$OUT/summary.txt"
}

case ${1:-run} in
  prepare) prepare ;;
  run) run ;;
  dry-run) DRY=1 OUT=${OUT:-$(mktemp -d)} run ;;
  *) echo "error: unknown mode '$1' (prepare, dry-run or run)" >&2; exit 2 ;;
esac
