"""How far apart two training runs ended: `python -m experiments.compare_runs WORKDIR_A WORKDIR_B`.

Restores the latest checkpoint of each workdir with plain orbax (no zoo code) and prints one JSON
line: each run's step and, per collection (`params`, `batch_stats`), the largest absolute
difference between matching arrays. Used to check that the same run on another number of devices
or processes ends with the same model (docs/devices.md).
"""
import json
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp


def latest(workdir: str) -> dict:
  manager = ocp.CheckpointManager(Path(workdir).absolute() / 'checkpoints')
  return manager.restore(manager.latest_step())


def max_abs_difference(a, b) -> float:
  differences = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)
  return max(jax.tree.leaves(differences), default=0.0)


def main(argv: list[str]) -> None:
  if len(argv) != 3:
    sys.exit('usage: python -m experiments.compare_runs WORKDIR_A WORKDIR_B')
  a, b = latest(argv[1]), latest(argv[2])
  report = {'step_a': int(a['step']), 'step_b': int(b['step'])}
  for collection in ('params', 'batch_stats'):
    if collection in a or collection in b:
      report[f'max_abs_difference_{collection}'] = max_abs_difference(a[collection], b[collection])
  print(json.dumps(report))


if __name__ == '__main__':
  main(sys.argv)
