#!/usr/bin/env bash
# The GPU figures in one command, each part's JSON under OUTDIR:
#
#   bash benchmarks/gpu.sh OUTDIR [PARTS] [TASK]
#
# PARTS (comma-separated, default all of them; each compiles its own programs):
#   update  seconds per update at size1m, size12m and size12m-vision     -> update.json
#   unroll  size1m and size12m with the RSSM scans unrolled 4 and 16 steps per loop iteration
#           (--model.unroll: the same results; kernel launches and loop overhead on a GPU)
#                                                                  -> update_unroll{4,16}.json
#   seeds   K = 1, 2, 4, 8 size1m agents in one vmapped update         -> update_seeds.json
#   train   a short run of the dreamerv3 preset on TASK (default walker-walk; gym:Pendulum-v1
#           needs no MuJoCo): its summary and metrics, env steps/s and updates/s among them
#                                                   -> train.json, train_metrics.jsonl
#   loop    env steps/s while training on mjx:cartpole-swingup (size1m), host runner against
#           the device loop, at train ratios LOOP_RATIOS (default 32,512) and K = LOOP_SEEDS
#           (default 1,8) seeds (benchmarks/loop.py; MJX on the GPU)          -> loop.json
# STEPS (default 20) timed updates per case; TRAIN_STEPS (default 5000) env steps of the run
# (16 environments at train ratio 1024: one update per env step, about 5000 updates).
# Progress and every part's stderr go to OUTDIR/gpu.log. Each part is cut off after
# PART_TIMEOUT seconds (default 300; the run stops gracefully and its summary still comes back)
# and the next one runs; the exit status is 1 if any part failed. The update parts compile
# afresh each time, so their compile_s is a compilation's. Expected on one H100/H200:
# update + unroll about 6 minutes, seeds + train about 6; loop compiles one program per
# setting (8 by default) and needs its own PART_TIMEOUT of about 600.
set -uo pipefail

out=${1:?usage: bash benchmarks/gpu.sh OUTDIR [update,unroll,seeds,train,loop] [TASK]}
parts=${2:-update,unroll,seeds,train}
for p in ${parts//,/ }; do
  case $p in
    update | unroll | seeds | train | loop) ;;
    *)
      echo "unknown part $p; expected some of update,unroll,seeds,train,loop" >&2
      exit 2
      ;;
  esac
done
task=${3:-walker-walk}
py=${PYTHON:-python3}
limit=${PART_TIMEOUT:-300}
steps=${STEPS:-20}
run_dir=${RUN_DIR:-/tmp/rssm-jax-gpu-run}
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)  # before leaving for the repository's root, where the parts run
cd "$(dirname "$0")/.." || exit 2
log="$out/gpu.log"
failed=0

# One part: its command's stdout to OUTDIR/NAME.json, its stderr to the log.
part() {
  local name=$1
  shift
  echo "== $(date -u +%T) $name: $*" >>"$log"
  local start=$SECONDS
  timeout "$limit" "$@" >"$out/$name.json" 2>>"$log"
  local status=$?
  echo "== $name: exit status $status after $((SECONDS - start)) s" >>"$log"
  [ "$status" -eq 0 ] || failed=1
}

{
  echo "== $(date -u) rssm-jax GPU figures, parts $parts, task $task"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  "$py" -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1
} >>"$log"

for p in ${parts//,/ }; do
  case $p in
    update)
      part update "$py" benchmarks/update.py --cases size1m,size12m,size12m-vision --steps "$steps"
      ;;
    unroll)
      for u in 4 16; do
        part "update_unroll$u" "$py" benchmarks/update.py --cases size1m,size12m --steps "$steps" \
          --set "model.unroll=$u"
      done
      ;;
    seeds)
      part update_seeds "$py" benchmarks/update.py --cases size1m --seeds 1,2,4,8 --steps "$steps"
      ;;
    train)
      rm -rf "$run_dir"
      # The summary the runner prints last is the JSON line; the rest of stdout is progress.
      echo "== $(date -u +%T) train: dreamerv3 on $task" >>"$log"
      start=$SECONDS
      timeout "$limit" "$py" -m experiments.train --preset dreamerv3 --task "$task" \
        --logdir "$run_dir" --steps "${TRAIN_STEPS:-5000}" --run.eval_every 2500 \
        --run.log_every 500 --run.video_every 0 --logging.wandb disabled \
        --compile-cache "$run_dir-xla" 2>>"$log" | tail -n 1 >"$out/train.json"
      status=${PIPESTATUS[0]}
      echo "== train: exit status $status after $((SECONDS - start)) s" >>"$log"
      [ "$status" -eq 0 ] || failed=1
      cp "$run_dir/metrics.jsonl" "$out/train_metrics.jsonl" 2>>"$log"
      ;;
    loop)
      part loop "$py" benchmarks/loop.py --ratios "${LOOP_RATIOS:-32,512}" \
        --seeds "${LOOP_SEEDS:-1,8}" --steps "${LOOP_STEPS:-6000}"
      ;;
  esac
done
echo "== $(date -u +%T) done, failed=$failed" >>"$log"
exit "$failed"
