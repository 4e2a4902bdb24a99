"""Kills, preemption notices, damaged checkpoints and reruns: the run still ends exactly where an
uninterrupted one does, and no file is deleted."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import ROOT, last_json_line, run_experiment
from test_training import SMALL, restore_plain, train, without_timings

FLAGS = (*SMALL, '--epochs=3', '--checkpoint_every_steps=1', '--keep_checkpoints=50')


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('reference')
  return workdir, train(workdir, *FLAGS)


def start(workdir, *extra_flags) -> subprocess.Popen:
  env = dict(os.environ, JAX_NUM_CPU_DEVICES='1', JAX_PLATFORMS='cpu', MOCK_EXAMPLES='96', TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.Popen([sys.executable, str(ROOT / 'tests' / 'mock_experiment.py'), 'cifar',
                           f'--workdir={workdir}', *FLAGS, *extra_flags], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def saved_steps(workdir) -> list[int]:
  directory = Path(workdir) / 'checkpoints'
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.exists() else []


def wait_for_step(process, workdir, step, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline and process.poll() is None:
    if saved_steps(workdir) and saved_steps(workdir)[-1] >= step:
      return
    time.sleep(0.05)
  raise AssertionError(f'no checkpoint {step} before the process ended: {process.communicate()[1][-2000:]}')


def assert_same_result(workdir, reference):
  ref_dir, ref_history = reference
  history = json.loads((Path(workdir) / 'history.json').read_text())
  assert without_timings(history) == without_timings(ref_history)
  jax.tree.map(np.testing.assert_array_equal, restore_plain(workdir)['params'], restore_plain(ref_dir)['params'])


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_is_bit_identical(reference, tmp_path):
  process = start(tmp_path)
  wait_for_step(process, tmp_path, 8)  # epoch 2 of 3, mid-epoch
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL
  train(tmp_path, *FLAGS, resumes_from=saved_steps(tmp_path)[-1])
  assert_same_result(tmp_path, reference)


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly_then_resumes(reference, tmp_path):
  process = start(tmp_path)
  wait_for_step(process, tmp_path, 3)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 0, stderr[-3000:]
  assert 'SIGTERM: saved step' in stderr
  stopped_at = saved_steps(tmp_path)[-1]
  assert stopped_at < 18
  train(tmp_path, *FLAGS, resumes_from=stopped_at)
  assert_same_result(tmp_path, reference)


@pytest.mark.slow
def test_sigterm_after_an_epoch_without_evaluation_exits_cleanly(tmp_path):
  """The summary names the last evaluated epoch; with none yet, it has no eval figures."""
  process = start(tmp_path, '--eval_every_epochs=3')  # only the last epoch is evaluated
  wait_for_step(process, tmp_path, 7)  # past epoch 1, which has a history entry without evaluation
  process.send_signal(signal.SIGTERM)
  stdout, stderr = process.communicate(timeout=120)
  assert process.returncode == 0, stderr[-3000:]
  assert 'Traceback' not in stderr and 'SIGTERM: saved step' in stderr
  stopped_at = saved_steps(tmp_path)[-1]
  assert stopped_at < 18
  summary = last_json_line(stdout)
  assert summary['epochs'] == stopped_at // 6 and 'eval_accuracy' not in summary
  history = train(tmp_path, *FLAGS, '--eval_every_epochs=3', resumes_from=stopped_at)
  assert [('eval_accuracy' in h) for h in history] == [False, False, True]


def damage(step_dir: Path) -> None:
  for path in step_dir.rglob('*'):
    if path.is_file() and path.stat().st_size > 0 and 'ocdbt' in str(path):
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.slow
def test_a_damaged_latest_checkpoint_falls_back_and_nothing_is_deleted(reference, tmp_path):
  import shutil
  shutil.copytree(reference[0], tmp_path / 'w')
  workdir = tmp_path / 'w'
  damage(workdir / 'checkpoints' / '18')
  evaluation = run_experiment('cifar', '--mode=eval', f'--workdir={workdir}')
  assert evaluation.returncode == 0, evaluation.stderr[-3000:]
  assert 'unreadable' in evaluation.stderr
  assert last_json_line(evaluation.stdout)['step'] == 17
  assert (workdir / 'checkpoints' / '18').exists()  # eval never touches the files
  train(workdir, *FLAGS, resumes_from=17)  # redoes step 18
  assert (workdir / 'checkpoints' / 'unreadable-18').is_dir()  # kept, renamed aside
  assert_same_result(workdir, reference)


@pytest.mark.slow
def test_resume_from_an_epochs_last_checkpoint_is_bit_identical(reference, tmp_path):
  import shutil
  shutil.copytree(reference[0], tmp_path / 'w')
  workdir = tmp_path / 'w'
  for step_dir in (workdir / 'checkpoints').iterdir():  # as if killed right after epoch 1's save
    if step_dir.name.isdigit() and int(step_dir.name) > 6:
      shutil.rmtree(step_dir)
  train(workdir, *FLAGS, resumes_from=6)
  assert_same_result(workdir, reference)


def test_same_seed_same_devices_gives_identical_history(reference, tmp_path):
  assert without_timings(train(tmp_path, *FLAGS)) == without_timings(reference[1])
