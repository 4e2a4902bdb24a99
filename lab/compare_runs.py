"""How far apart two training runs are: `python -m lab.compare_runs WORKDIR_A WORKDIR_B [STEP]`.

Restores each workdir's checkpoint of STEP (default: each one's newest readable one) as host arrays
(`zoo.checkpoints.restore_arrays`, the reader `zoo.load` uses) and prints one JSON line: each run's step and, per collection (`params`, `batch_stats`), the
largest absolute difference between matching arrays. Used to check that the same run on another number of devices
or processes ends with the same model (docs/devices.md).
"""
import json
import sys

import jax
import numpy as np

from zoo import checkpoints
from zoo.errors import ZooError


def max_abs_difference(a, b) -> float:
  differences = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)
  return max(jax.tree.leaves(differences), default=0.0)


def main(argv: list[str]) -> None:
  if len(argv) not in (3, 4):
    sys.exit('usage: python -m lab.compare_runs WORKDIR_A WORKDIR_B [STEP]')
  step = int(argv[3]) if len(argv) == 4 else None
  try:
    (_, a), (_, b) = checkpoints.restore_arrays(argv[1], step), checkpoints.restore_arrays(argv[2], step)
  except ZooError as e:
    sys.exit(f'error: {e}')
  report = {'step_a': int(a['step']), 'step_b': int(b['step'])}
  for collection in ('params', 'batch_stats'):
    if collection in a or collection in b:
      report[f'max_abs_difference_{collection}'] = max_abs_difference(a[collection], b[collection])
  print(json.dumps(report))


if __name__ == '__main__':
  main(sys.argv)
