#!/usr/bin/env bash
# The seed recipe against the seed's Keras code, whole process: wall time of 2 epochs on
# train[:25000] with evaluation on train[45000:] after each, batch 32, imports, data loading and
# compilation included; Keras divided by the zoo, on this machine. Runs are interleaved so that
# drift in the machine's speed hits both alike; each round is
#   Keras (lab/keras_reference.py --model=cnn) | the zoo's first run (its compilation and
#   split caches empty) | the zoo's rerun (both caches warm).
#
# Run:  DATA_DIR=/path/to/tfds bash lab/seed_ratio.sh   (ROUNDS=4 by default; DATA_DIR
#       defaults to $TFDS_DATA_DIR; it must hold the cifar10 train split)
# Prints one line per round and the medians. Results: docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-4}
DATA_DIR=${DATA_DIR:-${TFDS_DATA_DIR:?set DATA_DIR (or TFDS_DATA_DIR) to a prepared TFDS directory}}
PYTHON=${PYTHON:-python}
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
ZOO_FLAGS=(--flagfile=experiments/recipes/cifar_seed.flags "--data_dir=$DATA_DIR" --epochs=2
           '--train_split=train[:25000]' '--eval_split=train[45000:]'
           "--compilation_cache=$SCRATCH/compiled" "--split_cache=$SCRATCH/splits")

timed() {  # timed NAME COMMAND...: wall seconds of COMMAND; its output in $SCRATCH/NAME.out
  local name=$1; shift
  /usr/bin/time -o "$SCRATCH/$name.time" -f '%e' "$@" > "$SCRATCH/$name.out" 2> "$SCRATCH/$name.err" \
    || { echo "$name failed:" >&2; tail -5 "$SCRATCH/$name.err" >&2; exit 1; }
  cat "$SCRATCH/$name.time"
}
accuracy() {  # the eval accuracy in the last JSON line of a run's output
  tail -1 "$SCRATCH/$1.out" | $PYTHON -c "import json, sys; print(round(json.load(sys.stdin)['eval_accuracy'], 4))"
}

: > "$SCRATCH/rounds"
for round in $(seq 1 "$ROUNDS"); do
  rm -rf "$SCRATCH/compiled" "$SCRATCH/splits" "$SCRATCH"/w*
  keras=$(timed keras $PYTHON -m lab.keras_reference --model=cnn "--data_dir=$DATA_DIR" --epochs=2 \
          --batch_size=32 '--train_split=train[:25000]' '--eval_split=train[45000:]')
  first=$(timed first $PYTHON -m experiments.cifar "${ZOO_FLAGS[@]}" "--workdir=$SCRATCH/w1")
  rerun=$(timed rerun $PYTHON -m experiments.cifar "${ZOO_FLAGS[@]}" "--workdir=$SCRATCH/w2")
  echo "$keras $first $rerun" >> "$SCRATCH/rounds"
  echo "round $round: keras ${keras}s, zoo first ${first}s, rerun ${rerun}s;" \
       "keras/first $($PYTHON -c "print(round($keras / $first, 2))"), keras/rerun $($PYTHON -c "print(round($keras / $rerun, 2))");" \
       "accuracy keras $(accuracy keras), zoo $(accuracy first) $(accuracy rerun)"
done
$PYTHON - "$SCRATCH/rounds" <<'EOF'
import statistics, sys
rounds = [tuple(map(float, line.split())) for line in open(sys.argv[1])]
first = statistics.median(k / f for k, f, _ in rounds)
rerun = statistics.median(k / r for k, _, r in rounds)
print(f'median Keras/zoo over {len(rounds)} rounds: first run {first:.2f}x, rerun {rerun:.2f}x')
EOF
