"""--mode=lr_find: fastai's learning-rate range test (zoo/training/lr_find.py)."""
import math

import jax
import numpy as np
import pytest

from conftest import last_json_line, run_experiment
from zoo.config import Config
from zoo.models import create_model
from zoo.training import lr_find, steps


def test_the_command_plots_and_suggests_a_rate_and_writes_nothing_else(tmp_path):
  """Without --workdir the plot goes into the current directory, and nothing else does: no
  checkpoint, no config.json, no default workdir."""
  result = run_experiment('cifar', '--mode=lr_find', '--batch_size=16', '--lr_find_steps=30', cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  found = last_json_line(result.stdout)
  assert found['steps'] <= 30 and found['plot'] == str(tmp_path / 'lr_find.png')
  assert 1e-7 <= found['suggested_learning_rate'] < 10
  assert sorted(p.name for p in tmp_path.iterdir()) == ['lr_find.png']
  assert (tmp_path / 'lr_find.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_every_step_runs_at_its_rate_rising_exponentially():
  """Plain SGD's update at step i is -rate(i) x gradient, whatever --learning_rate says."""
  config = Config(optimizer='sgd', momentum=0.0, learning_rate=0.5, schedule='constant')
  model = create_model('mlp', num_classes=3, settings={'hidden_sizes': (4,), 'dropout_rate': 0.0})
  factor = lambda count: lr_find.rate(count, 10, 1e-4, 1.0) / config.learning_rate
  program = lr_find._RangeTestProgram(config, model, np.zeros((1, 2, 2, 1), np.float32), 5, steps.data_mesh(), factor)
  params = model.init(jax.random.key(0), np.zeros((1, 2, 2, 1), np.float32))['params']
  grads = jax.tree.map(np.ones_like, params)
  state = program.optimizer.init(params)
  for step in range(3):
    updates, state = program.optimizer.update(grads, state, params)
    for leaf in jax.tree.leaves(updates):
      np.testing.assert_allclose(leaf, -1e-4 * 10 ** (0.4 * step), rtol=1e-5)
  assert lr_find.rate(0, 10, 1e-4, 1.0) == pytest.approx(1e-4) and lr_find.rate(10, 10, 1e-4, 1.0) == pytest.approx(1.0)


def test_the_smoothed_loss_stops_the_test_at_four_times_its_lowest():
  recorder = lr_find.Recorder()
  assert recorder.add(1e-3, 2.0) and recorder.smoothed == [2.0]  # debiased: the first is the loss itself
  for loss in [2.0] * 9 + [1.0] * 10 + [50.0] * 20:
    if not recorder.add(1e-3, loss):
      break
  assert recorder.diverged and 20 < len(recorder.losses) < 40
  assert recorder.smoothed[-1] > 4 * min(recorder.smoothed) >= recorder.smoothed[-2]
  assert not lr_find.Recorder().add(1e-3, math.nan)


def test_the_suggestion_is_in_the_longest_descent():
  """fastai's valley: halfway down the longest decreasing stretch (a third, then a sixth of it)."""
  rates = [lr_find.rate(i, 100, 1e-7, 10) for i in range(100)]
  losses = [2.3] * 40 + list(np.linspace(2.3, 0.5, 40)) + list(np.linspace(0.6, 5, 20))
  recorder = lr_find.Recorder(learning_rates=rates, smoothed=losses)
  suggested = lr_find.suggestion(recorder, 100)
  assert rates[40] < suggested < rates[79]
  assert rates.index(suggested) == pytest.approx(40 + 40 / 2, abs=3)
