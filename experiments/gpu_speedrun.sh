#!/usr/bin/env bash
# One prepared GPU run (issue #4, item 5): the benchmark, then the airbench recipe end to end, then
# the time to 94% from its history. Installs nothing: it needs a Python with this project and
# jax[cuda12] already installed (`pip install -e '.[cuda]'`) and a TFDS dir holding cifar10.
#
#   DATA_DIR=/path/to/tfds [SPLITS=validation|test] bash experiments/gpu_speedrun.sh
#
# SPLITS=validation (the default) trains on train[:45000] and evaluates on train[45000:];
# SPLITS=test trains on train and evaluates on test, the airbench94 protocol.
# Prints the benchmark table, one JSON line per epoch and a final JSON summary line.
set -euo pipefail
DATA_DIR=${DATA_DIR:-${TFDS_DATA_DIR:-}}
SPLITS=${SPLITS:-validation}
WORKDIR=${WORKDIR:-workdirs/gpu_speedrun_$(date +%s)}
PYTHON=${PYTHON:-python}

if [ -z "$DATA_DIR" ] || [ ! -d "$DATA_DIR/cifar10" ]; then
  echo "error: DATA_DIR=$DATA_DIR holds no cifar10; pass DATA_DIR=<a TFDS directory with cifar10 prepared>" >&2
  exit 1
fi
if ! "$PYTHON" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
  echo "error: JAX sees no GPU here; install this project with jax[cuda12] (pip install -e '.[cuda]') on a GPU machine" >&2
  exit 1
fi
case "$SPLITS" in
  validation) SPLIT_FLAGS=(--train_split='train[:45000]' --eval_split='train[45000:]') ;;
  test) SPLIT_FLAGS=(--train_split=train --eval_split=test) ;;
  *) echo "error: SPLITS=$SPLITS; use validation or test" >&2; exit 1 ;;
esac

"$PYTHON" -c "import jax; print('device:', jax.devices()[0].device_kind, '| jax', jax.__version__)"
"$PYTHON" -m experiments.benchmark --data_dir="$DATA_DIR" --models=simple_cnn,airbench,resnet20 --keras=false

start=$(date +%s.%N)
"$PYTHON" -m experiments.cifar --flagfile=experiments/recipes/cifar_airbench.flags --accelerator=gpu \
  --data_dir="$DATA_DIR" "${SPLIT_FLAGS[@]}" --workdir="$WORKDIR" --log_every_steps=1000 \
  --eval_every_epochs=1
end=$(date +%s.%N)

"$PYTHON" - "$WORKDIR" "$start" "$end" <<'PY'
import json, sys
workdir, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
history = json.load(open(f'{workdir}/history.json'))
elapsed, reached = 0.0, None
for entry in history:
  elapsed += entry['seconds']  # train + eval of the epoch; the first epoch includes compilation
  print(json.dumps({k: entry.get(k) for k in ('epoch', 'eval_accuracy', 'seconds', 'train_pflop')}))
  if reached is None and entry.get('eval_accuracy', 0) >= 0.94:
    reached = {'epoch': entry['epoch'], 'seconds_to_94': round(elapsed, 2)}
print(json.dumps({'summary': 'gpu_speedrun', 'final_eval_accuracy': history[-1]['eval_accuracy'],
                  'train_pflop': history[-1]['train_pflop'], 'epoch_seconds_total': round(elapsed, 2),
                  'process_seconds': round(end - start, 1), 'reached_94': reached}))
PY
