#!/usr/bin/env bash
# Fine-tuning measured on CIFAR-10: a net trained on the 6 animal classes, fine-tuned on the 4
# vehicle classes with 100 training images each, against the same net from scratch with the same
# epochs, all judged on held-out vehicle images. Usage: bash lab/finetune_cifar.sh DATA_DIR [OUT]
# (OUT default: /tmp/zoo_finetune). Train and held-out images come from train[:45000] and train[45000:].
set -euo pipefail
DATA_DIR=$1
OUT=${2:-/tmp/zoo_finetune}
SEEDS=${SEEDS:-"0 1 2"}
EPOCHS=${EPOCHS:-10}
mkdir -p "$OUT"
if [ ! -d "$OUT/all" ]; then
  python -m datatools.split_to_folder --dataset=cifar10 --data_dir="$DATA_DIR" --split='train[:45000]' --out="$OUT/all/train"
  python -m datatools.split_to_folder --dataset=cifar10 --data_dir="$DATA_DIR" --split='train[45000:]' --out="$OUT/all/test"
fi
if [ ! -d "$OUT/animals" ]; then  # the 6 animal classes, every image
  for split in train test; do
    for c in bird cat deer dog frog horse; do
      mkdir -p "$OUT/animals/$split" && cp -r "$OUT/all/$split/$c" "$OUT/animals/$split/"
    done
  done
fi
if [ ! -d "$OUT/vehicles" ]; then  # the 4 vehicle classes: 100 training images each, every held-out one
  for c in airplane automobile ship truck; do
    mkdir -p "$OUT/vehicles/train/$c" "$OUT/vehicles/test"
    ls "$OUT/all/train/$c" | sort -n | sed -n 1,100p | while read -r f; do cp "$OUT/all/train/$c/$f" "$OUT/vehicles/train/$c/"; done
    cp -r "$OUT/all/test/$c" "$OUT/vehicles/test/"
  done
fi
RECIPE=(--flagfile=experiments/recipes/cifar_seed.flags --compilation_cache='' --split_cache='')
[ -d "$OUT/w_animals" ] || python -m experiments.images "${RECIPE[@]}" --image_folder="$OUT/animals" --workdir="$OUT/w_animals"
for seed in $SEEDS; do
  for run in scratch finetune frozen; do
    case $run in
      scratch) extra=() ;;
      finetune) extra=(--init_from="$OUT/w_animals") ;;
      frozen) extra=(--init_from="$OUT/w_animals" --freeze=backbone) ;;
    esac
    w="$OUT/w_vehicles_${run}_$seed"
    [ -d "$w" ] || python -m experiments.images "${RECIPE[@]}" --image_folder="$OUT/vehicles" --epochs="$EPOCHS" \
      --seed="$seed" --log_every_steps=1000 --workdir="$w" "${extra[@]}" | tail -1 | sed "s/^/$run seed $seed: /"
  done
done
