"""The same model on any number of devices: every registered model, BatchNorm and dropout included,
trains alike on 1 and 4 simulated devices, ResNet-20 with its recipe also on 2; checkpoints resume and evaluate across device counts.
"""
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, last_json_line, mock_data, run_experiment
from test_training import SMALL, assert_trained_alike, restore_plain, train
from zoo.models import MODELS
from zoo.training import loop

# Why a tolerance: the devices reduce gradients and BatchNorm moments in another order than one
# device does (a mean of per-device means, then an all-reduce), which changes float32 results in
# the last bits (~1e-7 relative). After the 3 SGD steps here the models end at most 6e-7 apart
# (measured on 1, 2 and 4 devices); anything that depends on the device count itself
# (per-device BatchNorm statistics or dropout masks) puts them 1e-3 to 1e-1 apart. Longer runs
# drift further (docs/devices.md), so the checks stay a few steps long.
ATOL, RTOL = 2e-5, 1e-4


@pytest.mark.slow
def test_every_model_trains_alike_on_one_and_four_devices(tmp_path):
  """`train_every_model.py` (3 SGD steps of each model in MODELS through the device-held feed's
  loop, BatchNorm and dropout active) on meshes of 1 and 4 of a process's 4 devices (4: the
  widest reduction; 2 devices in the test below); parameters, BatchNorm statistics and metric sums
  compared."""
  # Without LLVM optimisation XLA:CPU compiles the models' loops twice as fast; every device
  # count compiles alike.
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_backend_optimization_level=0', JAX_NUM_CPU_DEVICES='4')
  result = subprocess.run([sys.executable, str(ROOT / 'tests' / 'train_every_model.py'), str(tmp_path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  results = {}
  for devices in (1, 4):
    with np.load(tmp_path / f'{devices}.npz') as arrays:
      results[devices] = dict(arrays)
  one = results[1]
  assert {name.split('/')[0] for name in one} == set(MODELS)
  assert all(one[f'{model}/metrics/count'] == 3 * 16 for model in MODELS)  # STEPS x BATCH examples
  differences = {}
  assert results[4].keys() == one.keys()
  for name, value in one.items():
    if not np.allclose(results[4][name], value, rtol=RTOL, atol=ATOL):
      worst = float(np.max(np.abs(results[4][name] - value)))
      differences[name.split('/')[0]] = max(differences.get(name.split('/')[0], 0.0), worst)
  assert not differences, f'model: max abs difference between 4 devices and 1: {differences}'


@pytest.mark.slow
def test_batchnorm_model_trains_resumes_and_evaluates_alike_on_one_and_two_devices(tmp_path):
  """ResNet-20 with its recipe's tricks (augmentation, Nesterov, one-cycle, weight decay, label
  smoothing), narrowed (one block a stage, widths 8-16-32: the same layers, BatchNorm included),
  1 epoch of 6 SGD steps on mock data through the command line:
  - trained on 1 and on 2 devices, the runs end alike (history, parameters, BatchNorm statistics);
  - the 2-device run's step-4 checkpoint resumed on 1 device ends where the 1-device run ends;
  - each run's final checkpoint evaluated (`--mode=eval`) on the other device count gives the
    accuracy and loss the run itself measured."""
  flags = (*SMALL, '--model=resnet20', '--model.blocks_per_stage=1', '--model.widths=8,16,32', '--augment', '--optimizer=sgd', '--nesterov', '--schedule=onecycle',
           '--learning_rate=0.05', '--weight_decay=5e-4', '--label_smoothing=0.1', '--epochs=1',
           '--checkpoint_every_steps=2', '--keep_checkpoints=20')
  # The 1-device runs and evaluations in this process (one device), the 2-device ones through the
  # command line with 2 simulated devices.
  runs = {devices: (tmp_path / str(devices), train(tmp_path / str(devices), *flags, devices=devices))
          for devices in (1, 2)}
  assert_trained_alike(*runs[2], *runs[1])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL),
               restore_plain(runs[2][0])['batch_stats'], restore_plain(runs[1][0])['batch_stats'])

  interrupted = tmp_path / 'interrupted'
  shutil.copytree(runs[2][0], interrupted)
  for step_dir in (interrupted / 'checkpoints').iterdir():  # as if killed after step 4
    if step_dir.name.isdigit() and int(step_dir.name) > 4:
      shutil.rmtree(step_dir)
  (interrupted / 'history.json').write_text('[]')
  # On 1 device; it goes on from the checkpoint, not from step 0 (`train` checks the log).
  resumed = train(interrupted, *flags, resumes_from=4)
  assert_trained_alike(interrupted, resumed, *runs[1])

  for trained_on, evaluated_on in ((1, 2), (2, 1)):
    workdir, history = runs[trained_on]
    if evaluated_on == 1:
      with mock_data():
        report = loop.evaluate(workdir)
    else:
      result = run_experiment('cifar', '--mode=eval', f'--workdir={workdir}', devices=evaluated_on)
      assert result.returncode == 0, result.stderr[-3000:]
      report = last_json_line(result.stdout)
    assert report['step'] == 6 and report['num_examples'] == 96
    assert report['accuracy'] == history[-1]['eval_accuracy']  # a count of correct predictions
    assert report['loss'] == pytest.approx(history[-1]['eval_loss'], rel=1e-5)
