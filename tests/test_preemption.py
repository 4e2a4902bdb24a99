"""SIGTERM to one process of a two-process run (localhost, CPU, gloo): every process saves the same
step, says so and exits 0; the same command again resumes there and ends bit-identical to an
uninterrupted run (one process of two devices: the same global batches, and a mean of two numbers
is the same whichever process holds each)."""
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

from conftest import ROOT, run_experiment
from test_multiprocess import free_port
from zoo.checkpoints import restore_arrays

# 4 epochs of 20 steps: long enough to signal mid-epoch. A progress line, hence a dispatch boundary,
# every 3 steps: the processes must agree on a boundary, not on a step (a step count would jump past it).
EXAMPLES = 320
# Muon for the filters (SGD for the rest): its momentum must be saved and restored on both processes.
LOG_EVERY_STEPS = 3
FLAGS = ('--epochs=4', '--batch_size=16', '--eval_batch_size=80', f'--log_every_steps={LOG_EVERY_STEPS}',
         '--optimizer=muon', '--learning_rate=0.05', '--muon_learning_rate=0.05', '--keep_checkpoints=50')
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

  def wait_for_progress(self, i: int, past_step: int, timeout: float = 120) -> None:
    """Until process `i` has logged a training step after `past_step` (training is under way)."""
    deadline = time.time() + timeout
    while time.time() < deadline and all(p.poll() is None for p in self.processes):
      if any(int(s) > past_step for s in re.findall(r'epoch \d+/\d+ step (\d+)/', self.stderr(i))):
        return
      time.sleep(0.05)
    self.kill()
    raise AssertionError(f'process {i} logged no training step after {past_step}:\n{self.stderr(i)[-3000:]}')

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


def finish(run: TwoProcesses, timeout: float) -> None:
  assert run.wait(timeout) == [0, 0], run.stderr(0)[-3000:] + run.stderr(1)[-3000:]


def interrupt(run: TwoProcesses, signalled: int, past_step: int) -> int:
  """SIGTERM to process `signalled` alone once it trains past `past_step`; returns the step that both
  processes saved and named: the first dispatch boundary after the notice, no later."""
  run.wait_for_progress(signalled, past_step)
  run.processes[signalled].send_signal(signal.SIGTERM)
  finish(run, timeout=60)
  saved = []
  for i in range(2):
    lines = [line for line in run.stderr(i).splitlines() if 'rerun the same command to resume' in line]
    assert len(lines) == 1, run.stderr(i)[-3000:]
    saved.append(int(re.search(r'saved step (\d+)', lines[0]).group(1)))
  assert saved[0] == saved[1], saved
  # The signalled process checks its flag at every boundary (once the dispatch is done) and names the
  # first one after the notice; the log's order bounds it: at most one boundary (here a progress line,
  # LOG_EVERY_STEPS steps) after the last progress line before the notice was seen.
  log = run.stderr(signalled)
  seen = re.search(r'SIGTERM seen at the boundary of step (\d+)', log)
  assert seen, log[-3000:]
  progress = [int(s) for s in re.findall(r'epoch \d+/\d+ step (\d+)/', log[:seen.start()])]
  assert int(seen.group(1)) == saved[0], (seen.group(0), saved)
  assert saved[0] <= max(progress, default=0) + LOG_EVERY_STEPS, (progress[-3:], saved)
  return saved[0]


def assert_resumed(run: TwoProcesses, step: int) -> None:
  for i in range(2):
    assert f'Resuming from step {step} in' in run.stderr(i), run.stderr(i)[-3000:]


@pytest.mark.slow
def test_sigterm_to_either_process_stops_both_at_one_saved_step_and_reruns_end_bit_identical(tmp_path):
  reference = tmp_path / 'uninterrupted'
  result = run_experiment('cifar', f'--workdir={reference}', *FLAGS, devices=2, examples=EXAMPLES, timeout=240)
  assert result.returncode == 0, result.stderr[-3000:]

  workdir = tmp_path / 'w'
  first_stop = interrupt(TwoProcesses(workdir, tmp_path / 'logs-1'), signalled=1, past_step=0)
  assert 0 < first_stop < TOTAL_STEPS
  assert final_params(workdir)[0] == first_stop  # the workdir holds the step both processes named

  rerun = TwoProcesses(workdir, tmp_path / 'logs-2')  # the same command; now process 0 is signalled
  second_stop = interrupt(rerun, signalled=0, past_step=first_stop)
  assert_resumed(rerun, first_stop)
  assert first_stop < second_stop < TOTAL_STEPS
  assert final_params(workdir)[0] == second_stop

  last = TwoProcesses(workdir, tmp_path / 'logs-3')
  finish(last, timeout=240)
  assert_resumed(last, second_stop)
  assert_bit_identical(workdir, reference)
