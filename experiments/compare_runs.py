"""How far apart two training runs are: `python -m experiments.compare_runs WORKDIR_A WORKDIR_B [STEP]`.

Restores each workdir's checkpoint of STEP (default: each one's latest) with plain orbax (no zoo
code) and prints one JSON line: each run's step and, per collection (`params`, `batch_stats`), the
largest absolute difference between matching arrays. Used to check that the same run on another number of devices
or processes ends with the same model (docs/devices.md).
"""
import json
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp


def restore(workdir: str, step: int | None = None) -> dict:
  manager = ocp.CheckpointManager(Path(workdir).absolute() / 'checkpoints')
  return manager.restore(manager.latest_step() if step is None else step)


def max_abs_difference(a, b) -> float:
  differences = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)
  return max(jax.tree.leaves(differences), default=0.0)


def main(argv: list[str]) -> None:
  if len(argv) not in (3, 4):
    sys.exit('usage: python -m experiments.compare_runs WORKDIR_A WORKDIR_B [STEP]')
  step = int(argv[3]) if len(argv) == 4 else None
  a, b = restore(argv[1], step), restore(argv[2], step)
  report = {'step_a': int(a['step']), 'step_b': int(b['step'])}
  for collection in ('params', 'batch_stats'):
    if collection in a or collection in b:
      report[f'max_abs_difference_{collection}'] = max_abs_difference(a[collection], b[collection])
  print(json.dumps(report))


if __name__ == '__main__':
  main(sys.argv)
