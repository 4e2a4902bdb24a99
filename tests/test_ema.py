"""--ema_decay: the exponential moving average of the weights and BatchNorm statistics, kept in the
train state and the checkpoints, and what evaluation, the report, zoo.load, export and serving use.
One narrow ResNet (BatchNorm) run on mock data serves every check; the 2-device comparison is
tests/test_training_tools_devices.py's."""
import json

import jax
import numpy as np
import pytest

import zoo
from conftest import config_of, mock_data, train_in_process
from resume_check import assert_resumes_exactly
from zoo import checkpoints, packed
from zoo.config import Config
from zoo.errors import ZooError
from zoo.training import loop

DECAY = 0.8
FLAGS = ('--model=resnet20', '--model.blocks_per_stage=1', '--model.widths=4,8,8', '--optimizer=sgd',
         '--learning_rate=0.05', '--epochs=1', '--batch_size=16', '--eval_batch_size=48', '--notensorboard',
         f'--ema_decay={DECAY}', '--checkpoint_every_steps=1', '--keep_checkpoints=20')
STEPS_PER_EPOCH = 6  # 96 mock examples, batch 16


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('ema') / 'w'
  history, log = train_in_process('cifar', f'--workdir={workdir}', *FLAGS)
  return workdir, history, log


def _arrays(workdir, step=None) -> dict:
  return checkpoints.restore_arrays(workdir, step)[1]


def test_the_average_follows_every_step_and_batchnorm_statistics_too(run):
  """average(t) = D average(t - 1) + (1 - D) weights(t), from consecutive checkpoints."""
  workdir, _, log = run
  assert 'Evaluating the ema weights' in log
  for step in (2, 5, 6):
    before, after = _arrays(workdir, step - 1), _arrays(workdir, step)
    assert set(after['ema']) == {'params', 'batch_stats'}
    expected = jax.tree.map(lambda old, new: DECAY * old + (1 - DECAY) * new, before['ema'],
                            {'params': after['params'], 'batch_stats': after['batch_stats']})
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), after['ema'], expected)
  final = _arrays(workdir)
  assert not np.allclose(final['ema']['params']['Dense_0']['kernel'], final['params']['Dense_0']['kernel'])


def test_evaluation_the_report_load_and_a_packed_model_use_the_average(run, tmp_path):
  workdir, history, _ = run
  with mock_data():
    result = loop.evaluate(workdir)
  assert result['weights'] == 'ema'
  # Each epoch's evaluation and --mode=eval measure the same (averaged) model.
  assert result['loss'] == pytest.approx(history[-1]['eval_loss'], rel=1e-5)
  assert json.loads((workdir / 'eval.json').read_text())['weights'] == 'ema'
  ema = _arrays(workdir)['ema']
  trained = zoo.load(workdir)
  jax.tree.map(np.testing.assert_array_equal, trained.variables, ema)
  folder = packed.write_folder(workdir, tmp_path / 'packed')
  jax.tree.map(np.testing.assert_array_equal, zoo.load(folder).variables, ema)
  images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  raw = trained.model.apply(ema, trained.preprocess(images), train=False)
  np.testing.assert_allclose(trained.predict(images), jax.nn.softmax(raw), rtol=1e-5, atol=1e-6)


def test_a_run_with_an_average_resumes_bit_identical(run, tmp_path, caplog):
  workdir, history, _ = run
  config, _, _ = config_of('cifar', f'--workdir={workdir}', *FLAGS)
  with mock_data():
    assert_resumes_exactly(config, workdir, tmp_path / 'resumed', history, caplog, 4, STEPS_PER_EPOCH)
  jax.tree.map(np.testing.assert_array_equal, _arrays(workdir)['ema'], _arrays(tmp_path / 'resumed')['ema'])


def test_a_decay_outside_zero_to_one_is_one_error_line():
  with pytest.raises(ZooError, match=r'--ema_decay=1.0 is out of range; pass 0 <= --ema_decay < 1'):
    Config(ema_decay=1.0).validate(1)
