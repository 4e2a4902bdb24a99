"""SIGTERM to one process of a two-process run (localhost, CPU, gloo): every process saves the same
step, says so and exits 0; the same command again resumes there and ends bit-identical to an
uninterrupted two-process run."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import ROOT
from test_multiprocess import free_port
from zoo.checkpoints import restore_arrays

# 4 epochs of 20 steps, a boundary (and a progress line) after every step: long enough to signal mid-epoch.
EXAMPLES = 320
FLAGS = ('--epochs=4', '--batch_size=16', '--eval_batch_size=80', '--log_every_steps=1',
         '--optimizer=sgd', '--learning_rate=0.05', '--keep_checkpoints=50')
TOTAL_STEPS = 4 * EXAMPLES // 16


class TwoProcesses:
  """One two-process run of the same command, each process's output in a file (no pipe to fill)."""

  def __init__(self, workdir: Path, logs: Path):
    logs.mkdir(parents=True)
    self.logs = logs
    port = free_port()
    env = dict(os.environ, JAX_NUM_CPU_DEVICES='1', JAX_PLATFORMS='cpu', MOCK_EXAMPLES=str(EXAMPLES),
               TF_CPP_MIN_LOG_LEVEL='2')
    env.pop('XLA_FLAGS', None)
    self.processes = []
    for i in range(2):
      with open(logs / f'{i}.out', 'w') as out, open(logs / f'{i}.err', 'w') as err:
        self.processes.append(subprocess.Popen(
            [sys.executable, str(ROOT / 'tests' / 'mock_experiment.py'), 'cifar', f'--workdir={workdir}', *FLAGS,
             '--accelerator=cpu', f'--coordinator_address=localhost:{port}', '--num_processes=2',
             f'--process_id={i}'], cwd=ROOT, env=env, stdout=out, stderr=err))

  def stderr(self, i: int) -> str:
    return (self.logs / f'{i}.err').read_text()

  def wait_for_progress(self, i: int, timeout: float = 120) -> None:
    """Until process `i` has logged a training step of the first epoch (training is under way)."""
    deadline = time.time() + timeout
    while time.time() < deadline and all(p.poll() is None for p in self.processes):
      if re.search(r'epoch 1/\d+ step [1-9]', self.stderr(i)):
        return
      time.sleep(0.05)
    self.kill()
    raise AssertionError(f'process {i} logged no training step:\n{self.stderr(i)[-3000:]}')

  def wait(self, timeout: float) -> list[int]:
    deadline = time.time() + timeout
    try:
      for p in self.processes:
        p.wait(timeout=max(deadline - time.time(), 0.1))
    except subprocess.TimeoutExpired:
      self.kill()
      raise AssertionError(f'not finished within {timeout} s:\n' +
                           '\n'.join(self.stderr(i)[-2000:] for i in range(2))) from None
    return [p.returncode for p in self.processes]

  def kill(self) -> None:
    for p in self.processes:
      if p.poll() is None:
        p.kill()
        p.wait()


def final_params(workdir):
  step, tree = restore_arrays(workdir)
  return step, tree['params']


def assert_bit_identical(workdir, reference_workdir):
  (step, params), (reference_step, reference) = final_params(workdir), final_params(reference_workdir)
  assert step == reference_step == TOTAL_STEPS
  assert jax.tree.structure(params) == jax.tree.structure(reference)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference)))


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('uninterrupted') / 'w'
  run = TwoProcesses(workdir, workdir.parent / 'logs')
  assert run.wait(timeout=240) == [0, 0], run.stderr(0)[-3000:] + run.stderr(1)[-3000:]
  return workdir


@pytest.mark.slow
@pytest.mark.parametrize('signalled', [1, 0])
def test_sigterm_to_one_process_saves_the_same_step_everywhere_then_resumes_bit_identical(
    uninterrupted, tmp_path, signalled):
  workdir = tmp_path / 'w'
  run = TwoProcesses(workdir, tmp_path / 'logs')
  run.wait_for_progress(signalled)
  run.processes[signalled].send_signal(signal.SIGTERM)  # this process only
  assert run.wait(timeout=60) == [0, 0], run.stderr(0)[-3000:] + run.stderr(1)[-3000:]
  saved = []
  for i in range(2):
    lines = [line for line in run.stderr(i).splitlines() if 'rerun the same command to resume' in line]
    assert len(lines) == 1, run.stderr(i)[-3000:]
    saved.append(int(re.search(r'saved step (\d+)', lines[0]).group(1)))
  assert saved[0] == saved[1] < TOTAL_STEPS, saved
  stopped_at = saved[0]
  step, _ = final_params(workdir)
  assert step == stopped_at  # the workdir holds the step both processes named

  rerun = TwoProcesses(workdir, tmp_path / 'rerun-logs')
  assert rerun.wait(timeout=240) == [0, 0], rerun.stderr(0)[-3000:] + rerun.stderr(1)[-3000:]
  for i in range(2):
    assert f'Resuming from step {stopped_at} in' in rerun.stderr(i), rerun.stderr(i)[-3000:]
  assert_bit_identical(workdir, uninterrupted)
