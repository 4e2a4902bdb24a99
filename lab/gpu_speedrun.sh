#!/usr/bin/env bash
# One prepared GPU run: the airbench recipe end to end twice in float32 and twice
# in bfloat16 (each second run, seed 1, loads its programs from the compilation cache: its epoch
# times are compile-free), the time to 94% from each history, the benchmark, and (PARTS=ablations)
# the recipe without each of three tricks, and in bfloat16, over SEEDS; (PARTS=determinism) seed 0
# twice with --deterministic, compared; (PARTS=rebuild) the shipped cifar10/airbench rebuilt;
# (PARTS=vit) cifar_vit.flags for 10-30 epochs, in other shapes, with mixup/cutmix and EMA, side by side.
# Installs nothing. Needs a Python with JAX (GPU), Flax, Optax, Orbax, absl and Pillow, and a data
# dir holding cifar10: TFDS-prepared (needs TensorFlow too) or written by datatools.save_splits
# (NumPy only), e.g. for a machine without TensorFlow:
#
#   python -m datatools.save_splits --data_dir=DIR --jpeg_quality=75 \
#       --splits='train[:45000],train[45000:]' --out_dir=.gpu_data     # 23 MB, lossless
#   DATA_DIR=.gpu_data [SPLITS=validation|test] [PARTS='timing benchmark determinism ablations rebuild vit'] [SEEDS='0 1 2'] \
#       bash lab/gpu_speedrun.sh
#
# RECIPE=cifar_airbench_muon.flags runs the Muon recipe instead of cifar_airbench.flags (timing and
# determinism; the ablations name SGD-recipe tricks).
# SPLITS=validation (the default) trains on train[:45000] and evaluates on train[45000:];
# SPLITS=test trains on train and evaluates on test, the airbench94 protocol.
# Prints the benchmark table, one JSON line per epoch and a JSON summary line per run.
set -uo pipefail
DATA_DIR=${DATA_DIR:-${TFDS_DATA_DIR:-}}
RECIPE=${RECIPE:-cifar_airbench.flags}
SPLITS=${SPLITS:-validation}
WORKDIR=${WORKDIR:-workdirs/gpu_speedrun_$(date +%s)}
PYTHON=${PYTHON:-python}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2

if [ -z "$DATA_DIR" ] || [ ! -d "$DATA_DIR/cifar10" ]; then
  echo "error: DATA_DIR=$DATA_DIR holds no cifar10; pass DATA_DIR=<a TFDS directory, or one datatools.save_splits wrote, with cifar10>" >&2
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
PIPELINES=device
"$PYTHON" -c "import tensorflow" 2>/dev/null && PIPELINES=device,tf_data

"$PYTHON" -c "
import jax, flax, optax, orbax.checkpoint as ocp
print('device:', jax.devices()[0].device_kind, '| jax', jax.__version__, '| flax', flax.__version__,
      '| optax', optax.__version__, '| orbax', ocp.__version__)"

summarise() {  # workdir start end label
  "$PYTHON" - "$@" <<'PY'
import json, sys
workdir, start, end, label = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
history = json.load(open(f'{workdir}/history.json'))
elapsed, reached = 0.0, None
for entry in history:
  elapsed += entry['seconds']  # train + eval of the epoch; a cold first epoch includes compilation
  print(json.dumps({k: entry.get(k) for k in ('epoch', 'eval_accuracy', 'seconds', 'train_images_per_second',
                                               'train_gflops_per_second', 'train_pflop')}))
  if reached is None and entry.get('eval_accuracy', 0) >= 0.94:
    reached = {'epoch': entry['epoch'], 'seconds_to_94': round(elapsed, 2)}
print(json.dumps({'summary': label, 'final_eval_accuracy': history[-1]['eval_accuracy'],
                  'train_pflop': history[-1].get('train_pflop'), 'epoch_seconds_total': round(elapsed, 2),
                  'process_seconds': round(end - start, 1), 'reached_94': reached}))
PY
}

recipe() {  # label, extra flags...
  local label=$1; shift
  local start end
  start=$(date +%s.%N)
  timeout "${RUN_TIMEOUT:-300}" "$PYTHON" -m experiments.cifar --flagfile="experiments/recipes/$RECIPE" \
    --accelerator=gpu --data_dir="$DATA_DIR" "${SPLIT_FLAGS[@]}" --workdir="$WORKDIR/$label" \
    --log_every_steps=1000 "$@" 2>&1 | grep -v '^[IW]0000 '
  end=$(date +%s.%N)
  [ -f "$WORKDIR/$label/history.json" ] && summarise "$WORKDIR/$label" "$start" "$end" "$label"
}

PARTS=${PARTS:-timing benchmark}
if [[ " $PARTS " == *" rebuild "* ]]; then
  # The shipped cifar10/airbench: the Muon recipe on train[:45000], packed with its card (figures on
  # train[45000:]) into this tree's zoo/trained/cifar10/airbench/. COMMIT names the tree's commit on the card.
  timeout "${RUN_TIMEOUT:-300}" "$PYTHON" -m lab.rebuild_trained --data_dir="$DATA_DIR" --only=cifar10/airbench \
    --workdirs="$WORKDIR/rebuild" ${COMMIT:+--commit=$COMMIT} 2>&1 | grep -v '^[IW]0000 '
fi
if [[ " $PARTS " == *" vit "* ]]; then
  # cifar_vit.flags for more epochs and in other shapes, side by side on the GPU (accuracy only: their
  # times are not comparable); the final accuracy of each, then the history of each in its workdir.
  declare -A VIT=([e10]='' [e12]='--epochs=12' [e15]='--epochs=15' [e20]='--epochs=20' [e30]='--epochs=30'
                  [b256_e15]='--batch_size=256 --learning_rate=0.003 --epochs=15' [d6_e12]='--model.depth=6 --epochs=12'
                  [lr3_e15]='--learning_rate=0.003 --epochs=15' [mix_e15]='--epochs=15 --mixup_alpha=0.8 --cutmix_alpha=1.0'
                  [ema_e15]='--epochs=15 --ema_decay=0.999' [mix_ema_e30]='--epochs=30 --mixup_alpha=0.8 --cutmix_alpha=1.0 --ema_decay=0.999')
  mkdir -p "$WORKDIR"
  for name in "${!VIT[@]}"; do
    (export XLA_PYTHON_CLIENT_MEM_FRACTION=0.08  # eleven processes share the GPU's memory
     RECIPE=cifar_vit.flags recipe "vit_$name" --eval_every_epochs=1 ${VIT[$name]} > "$WORKDIR/vit_$name.log" 2>&1) &
  done
  wait
  for name in "${!VIT[@]}"; do grep '"summary"' "$WORKDIR/vit_$name.log" || tail -3 "$WORKDIR/vit_$name.log"; done
fi
if [[ " $PARTS " == *" timing "* ]]; then
  recipe cold --eval_every_epochs=1
  recipe warm --eval_every_epochs=1 --seed=1
  recipe bf16_cold --eval_every_epochs=1 --model.dtype=bfloat16
  recipe bf16_warm --eval_every_epochs=1 --model.dtype=bfloat16 --seed=1
fi
if [[ " $PARTS " == *" determinism "* ]]; then
  # Seed 0 twice with XLA's deterministic GPU ops (programs from the cache after the first): equal
  # accuracies (and histories) mean a seed reproduces; the epoch times give the price.
  recipe det_a --eval_every_epochs=1 --deterministic
  recipe det_b --eval_every_epochs=1 --deterministic
  "$PYTHON" -c "
import json, sys
a, b = (json.load(open(f'$WORKDIR/{r}/history.json')) for r in ('det_a', 'det_b'))
same = all(x['eval_accuracy'] == y['eval_accuracy'] and x['train_loss'] == y['train_loss'] for x, y in zip(a, b))
print('determinism: eval accuracies and train losses', 'identical' if same else 'DIFFER', 'in every epoch')"
fi
if [[ " $PARTS " == *" benchmark "* ]]; then
  timeout "${RUN_TIMEOUT:-300}" "$PYTHON" -m lab.benchmark --data_dir="$DATA_DIR" \
    --models=simple_cnn,airbench,resnet20 --keras=false --pipelines="$PIPELINES" \
    --pipeline_split="${SPLIT_FLAGS[0]#--train_split=}"
fi
if [[ " $PARTS " == *" ablations "* ]]; then
  # The recipe without one trick at a time, over SEEDS; one seed's variants run side by side on the
  # GPU (accuracy only: their times are not comparable), then a mean +- sd table.
  declare -A VARIANTS=([full]='' [no_lookahead]='--nolookahead' [no_alternating_flip]='--noalternating_flip'
                       [no_label_smoothing]='--label_smoothing=0' [bf16]='--model.dtype=bfloat16')
  mkdir -p "$WORKDIR"
  for seed in ${SEEDS:-0 1 2}; do
    for name in "${!VARIANTS[@]}"; do
      (export XLA_PYTHON_CLIENT_MEM_FRACTION=0.15  # five processes share the GPU's memory
       recipe "${name}_seed$seed" --eval_every_epochs=10 --seed="$seed" ${VARIANTS[$name]} \
         > "$WORKDIR/${name}_seed$seed.log" 2>&1) &
    done
    wait
  done
  "$PYTHON" - "$WORKDIR" <<'PY'
import collections, glob, json, os, statistics, sys
runs = collections.defaultdict(list)
for path in sorted(glob.glob(f'{sys.argv[1]}/*_seed*/history.json')):
  name = os.path.basename(os.path.dirname(path)).rsplit('_seed', 1)[0]
  runs[name].append(json.load(open(path))[-1]['eval_accuracy'])
print('| variant | seeds | mean accuracy | sd | each |')
print('| --- | --- | --- | --- | --- |')
for name, accs in sorted(runs.items()):
  sd = statistics.stdev(accs) if len(accs) > 1 else float('nan')
  print(f'| {name} | {len(accs)} | {statistics.mean(accs):.2%} | {sd:.2%} | {" ".join(f"{a:.2%}" for a in accs)} |')
PY
fi
