"""The same model on any number of devices: every registered model, BatchNorm and dropout included,
trains alike on 1, 2 and 4 simulated devices; checkpoints resume and evaluate across device counts.
"""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, last_json_line, run_experiment
from test_training import SMALL, assert_trained_alike, restore_plain, train
from zoo.models import MODELS

# Why a tolerance: the devices reduce gradients and BatchNorm moments in another order than one
# device does (a mean of per-device means, then an all-reduce), which changes float32 results in
# the last bits (~1e-7 relative). After the 3 SGD steps here the models end at most 6e-7 apart
# (measured on 1, 2 and 4 devices); anything that depends on the device count itself
# (per-device BatchNorm statistics or dropout masks) puts them 1e-3 to 1e-1 apart. Longer runs
# drift further (docs/devices.md), so the checks stay a few steps long.
ATOL, RTOL = 2e-5, 1e-4


@pytest.fixture(scope='module')
def every_model(tmp_path_factory):
  """{device count: {'<model>/<collection>/<path>': array}} after `train_every_model.py`."""
  directory = tmp_path_factory.mktemp('every_model')
  # Without LLVM optimisation XLA:CPU compiles the six models' loops twice as fast; the values
  # are those of the same program (and each device count compiles alike).
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_backend_optimization_level=0')
  results = {}
  for devices in (1, 2, 4):
    out = directory / f'{devices}.npz'
    result = subprocess.run([sys.executable, str(ROOT / 'tests' / 'train_every_model.py'), str(out)], cwd=ROOT,
                            env=dict(env, JAX_NUM_CPU_DEVICES=str(devices)), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(out) as arrays:
      results[devices] = dict(arrays)
  return results


@pytest.mark.parametrize('devices', [2, 4])
@pytest.mark.parametrize('model', sorted(MODELS))
def test_every_model_trains_alike_on_one_two_and_four_devices(every_model, model, devices):
  one, many = every_model[1], every_model[devices]
  names = sorted(k for k in one if k.startswith(f'{model}/'))
  assert names == sorted(k for k in many if k.startswith(f'{model}/'))
  assert any('/params/' in k for k in names)
  for name in names:
    np.testing.assert_allclose(many[name], one[name], rtol=RTOL, atol=ATOL, err_msg=name)
  assert one[f'{model}/metrics/count'] == 3 * 16  # STEPS x BATCH examples trained on


@pytest.fixture(scope='module')
def resnet_runs(tmp_path_factory):
  """ResNet-20 (BatchNorm) with its recipe's tricks (augmentation, Nesterov, one-cycle, weight decay,
  label smoothing), 1 epoch of 6 SGD steps on mock data, on 1 and on 2 devices."""
  root = tmp_path_factory.mktemp('resnet')
  flags = ('--model=resnet20', '--augment', '--optimizer=sgd', '--nesterov', '--schedule=onecycle',
           '--learning_rate=0.05', '--weight_decay=5e-4', '--label_smoothing=0.1', '--epochs=1',
           '--checkpoint_every_steps=2', '--keep_checkpoints=20')
  return flags, {devices: (root / str(devices), train(root / str(devices), *flags, devices=devices))
                 for devices in (1, 2)}


def test_batchnorm_model_trains_alike_on_one_and_two_devices(resnet_runs):
  _, runs = resnet_runs
  assert_trained_alike(*runs[2], *runs[1])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL),
               restore_plain(runs[2][0])['batch_stats'], restore_plain(runs[1][0])['batch_stats'])


@pytest.mark.parametrize('before, after', [(2, 1), (1, 2)])
def test_resume_on_another_device_count(resnet_runs, tmp_path, before, after):
  flags, runs = resnet_runs
  interrupted = tmp_path / 'interrupted'
  shutil.copytree(runs[before][0], interrupted)
  for step_dir in (interrupted / 'checkpoints').iterdir():  # as if killed after step 4
    if step_dir.name.isdigit() and int(step_dir.name) > 4:
      shutil.rmtree(step_dir)
  (interrupted / 'history.json').write_text('[]')
  result = run_experiment('cifar', f'--workdir={interrupted}', *SMALL, *flags, devices=after)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resuming from step 4' in result.stderr  # it went on from the checkpoint, not from step 0
  history = json.loads((interrupted / 'history.json').read_text())
  assert_trained_alike(interrupted, history, *runs[after])


@pytest.mark.parametrize('trained_on, evaluated_on', [(1, 2), (2, 1)])
def test_a_checkpoint_evaluates_alike_on_another_device_count(resnet_runs, trained_on, evaluated_on):
  _, runs = resnet_runs
  workdir, history = runs[trained_on]
  result = run_experiment('cifar', '--mode=eval', f'--workdir={workdir}', devices=evaluated_on)
  assert result.returncode == 0, result.stderr[-3000:]
  report = last_json_line(result.stdout)
  assert report['step'] == 6 and report['num_examples'] == 96
  assert report['accuracy'] == history[-1]['eval_accuracy']  # evaluated during training, on `trained_on`
  assert report['loss'] == pytest.approx(history[-1]['eval_loss'], rel=1e-5)
