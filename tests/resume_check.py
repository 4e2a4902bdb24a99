"""One check of exact resume, shared by the models' tests: a finished run's workdir is copied as it
was after `step` (later checkpoints and history entries dropped), trained again, and must end with
the same history (timings aside) and the same parameters and optimizer state."""
import json
import logging
import shutil

import jax
import numpy as np

from zoo import checkpoints
from zoo.training import loop

TIMINGS = ('seconds', 'train_images_per_second', 'train_gflops_per_second')


def without_timings(history: list) -> list:
  return [{k: v for k, v in entry.items() if k not in TIMINGS} for entry in history]


def killed_after(workdir, copy, step: int, history: list, steps_per_epoch: int):
  """`copy`: `workdir` as a run killed after `step` left it."""
  shutil.copytree(workdir, copy)
  for step_dir in (copy / 'checkpoints').iterdir():
    if step_dir.name.isdigit() and int(step_dir.name) > step:
      shutil.rmtree(step_dir)
  (copy / 'history.json').write_text(json.dumps(history[:step // steps_per_epoch]))
  return copy


def assert_resumes_exactly(config, workdir, copy, history: list, caplog, step: int, steps_per_epoch: int) -> None:
  killed_after(workdir, copy, step, history, steps_per_epoch)
  caplog.clear()
  caplog.set_level(logging.INFO)
  again = loop.train_and_evaluate(config, copy)
  assert f'Resuming from step {step}' in caplog.text  # not from step 0
  assert without_timings(again) == without_timings(history)
  (_, a), (_, b) = checkpoints.restore_arrays(workdir), checkpoints.restore_arrays(copy)
  jax.tree.map(np.testing.assert_array_equal, a['params'], b['params'])
  jax.tree.map(np.testing.assert_array_equal, a['opt_state'], b['opt_state'])
