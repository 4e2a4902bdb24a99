"""Fine-tuning from a trained workdir (`--init_from`, `--freeze`): what is copied, what is new,
what stays frozen, and one line when the architectures do not fit."""
import json

import jax
import numpy as np
import pytest

from conftest import assert_one_line_error, run_experiment
from test_datasets import image_folder
from zoo import checkpoints

SMALL = ('--epochs=1', '--batch_size=8', '--eval_batch_size=8', '--optimizer=sgd', '--learning_rate=0.05',
         '--momentum=0.9', '--weight_decay=0.01')


def _params(workdir) -> dict:
  _, tree = checkpoints.restore_arrays(workdir)
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree['params'])[0]}


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  """An MLP trained on 10 classes (mock CIFAR-10)."""
  workdir = tmp_path_factory.mktemp('source') / 'w'
  result = run_experiment('cifar', f'--workdir={workdir}', '--model=mlp', *SMALL)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def _finetune(tmp_path, source, *flags):
  folder = image_folder(tmp_path / 'photos', classes=('bus', 'car', 'ship', 'truck'), per_class=(8, 4))
  workdir = tmp_path / 'w'
  result = run_experiment('images', f'--image_folder={folder}', f'--workdir={workdir}', '--model=mlp',
                          f'--init_from={source}', '--image_size=32', *SMALL, *flags, mock=False)
  return result, workdir


def test_freeze_backbone_trains_a_new_head_and_keeps_every_other_parameter(tmp_path, source):
  result, workdir = _finetune(tmp_path, source, '--freeze=backbone')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'new: params/Dense_2/bias, params/Dense_2/kernel' in result.stderr
  before, after = _params(source), _params(workdir)
  assert after['Dense_2/kernel'].shape == (256, 4) and before['Dense_2/kernel'].shape == (256, 10)
  for path in before:
    if not path.startswith('Dense_2/'):
      np.testing.assert_array_equal(after[path], before[path], err_msg=path)  # copied, then frozen: bit-identical
  recorded = json.loads((workdir / 'config.json').read_text())
  assert recorded['init_from'] == str(source) and recorded['freeze'] == 'backbone'


def test_without_freezing_the_copied_backbone_trains_on(tmp_path, source):
  result, workdir = _finetune(tmp_path, source)
  assert result.returncode == 0, result.stderr[-3000:]
  before, after = _params(source), _params(workdir)
  assert not np.array_equal(after['Dense_0/kernel'], before['Dense_0/kernel'])
  # ...from the copy: one epoch of 4 small steps moves it far less than a fresh initialisation differs.
  assert np.abs(after['Dense_0/kernel'] - before['Dense_0/kernel']).max() < 0.1


def test_an_architecture_that_does_not_fit_is_named_in_one_line(tmp_path, source):
  result, workdir = _finetune(tmp_path, source, '--model=simple_cnn')
  assert_one_line_error(result, 'does not fit this model: params/Conv_0/bias', 'drop --init_from')
  assert not (workdir / 'checkpoints').exists() or not any((workdir / 'checkpoints').iterdir())


def test_a_source_that_is_not_a_workdir_is_refused_before_reading_data(tmp_path):
  result, _ = _finetune(tmp_path, tmp_path / 'nothing')
  assert_one_line_error(result, 'not a zoo workdir', 'pass the workdir of a training run')
