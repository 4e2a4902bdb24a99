"""Bad input: one line naming the problem and the fix, a non-zero exit, no traceback, nothing lost."""
import json
import re

import jax
import numpy as np
import pytest

from conftest import assert_one_line_error, real_data_dir, run_experiment, train_in_process
from test_training import restore_plain
from zoo import workdir as workdir_lib
from zoo.errors import ZooError

SMALL = ('--epochs=1', '--batch_size=16', '--eval_batch_size=40')


@pytest.mark.parametrize('flags, problem, fix, devices', [
    (('--epochs=0',), '--epochs=0', 'pass --epochs=1 or more', 1),
    (('--epochs=-3',), '--epochs=-3', 'pass --epochs=1 or more', 1),
    (('--batch_size=15',), 'multiple of the device count (2)', 'pass e.g. --batch_size=14', 2),
    (('--model=vgg',), "unknown model 'vgg'", 'choose one of: airbench, bilstm', 1),
    (('--optimizer=lamb',), "unknown --optimizer='lamb'", 'choose one of: adam, adamw, sgd', 1),
    (('--dataset=mnsit',), "unknown dataset 'mnsit'", 'pass a TFDS name such as mnist', 1),
    (('--accelerator=gpu',), '--accelerator=gpu', 'or pass --accelerator=cpu', 1),
    (('--accelerator=tpu',), '--accelerator=tpu', 'or pass --accelerator=cpu', 1),
    (('--learning_rate=0',), '--learning_rate=0.0', 'pass a rate such as', 1),
    (('--keep_checkpoints=-1',), '--keep_checkpoints=-1', 'pass --keep_checkpoints=1 or more', 1),
    (('--log_every_steps=0',), '--log_every_steps=0', 'pass --log_every_steps=1 or more', 1),
])
def test_bad_flags(tmp_path, flags, problem, fix, devices):
  result = run_experiment('cifar', f'--workdir={tmp_path / "w"}', *SMALL, *flags, devices=devices)
  assert_one_line_error(result, problem, fix)
  assert not (tmp_path / 'w' / 'config.json').exists()  # a typo is never recorded


def test_misspelt_split(tmp_path):
  data_dir = real_data_dir('cifar10')  # mock_data serves any split name
  result = run_experiment('cifar', f'--workdir={tmp_path}', f'--data_dir={data_dir}', '--eval_split=tset',
                          mock=False)
  assert_one_line_error(result, "split 'tset'", 'slices such as "train[:90%]"')


def test_no_data_and_no_network(tmp_path):
  result = run_experiment('cifar', f'--workdir={tmp_path / "w"}', f'--data_dir={tmp_path / "empty"}', mock=False)
  assert_one_line_error(result, 'could not be downloaded', 'pass --data_dir=DIR holding a prepared copy')


def test_eval_of_a_directory_that_is_no_workdir(tmp_path):
  assert_one_line_error(run_experiment('cifar', '--mode=eval', f'--workdir={tmp_path}'), 'not a zoo workdir',
                        'pass the workdir of a training run')


def test_eval_of_a_workdir_without_checkpoints(tmp_path):
  # what training writes before its first checkpoint
  (tmp_path / 'config.json').write_text(json.dumps({'model': 'simple_cnn',
                                                   workdir_lib.FORMAT_KEY: workdir_lib.FORMAT_VERSION}))
  (tmp_path / 'dataset.json').write_text(json.dumps({'inputs': {'kind': 'image'}}))
  assert_one_line_error(run_experiment('cifar', '--mode=eval', f'--workdir={tmp_path}'), 'has no checkpoint',
                        'train first')


def test_a_config_json_that_is_no_object_stops_training_with_one_line(tmp_path):
  (tmp_path / 'config.json').write_text('[]')
  result = run_experiment('cifar', f'--workdir={tmp_path}', *SMALL)
  assert_one_line_error(result, 'config.json is not what the zoo writes', 'restore it or use a new --workdir')
  assert (tmp_path / 'config.json').read_text() == '[]'  # kept as it was


@pytest.mark.parametrize('content', ['[]', '"simple_cnn"', '42', 'null', '{"model": "simple_cnn"', '\x89PNG',
                                     '{"epochs": "ten"}', '{"nesterov": 1}', '{"vocab_size": [3]}'])
def test_a_config_json_the_zoo_did_not_write_is_named_in_one_line(tmp_path, content):
  if content.startswith('{') and content.endswith('}'):  # of this zoo's format: its values are what is wrong
    content = content[:-1] + f', "{workdir_lib.FORMAT_KEY}": {workdir_lib.FORMAT_VERSION}}}'
  (tmp_path / 'config.json').write_text(content)
  for read in (workdir_lib.read_config, workdir_lib.trained_config):
    with pytest.raises(ZooError, match=r'config.json is not .*; restore it or use a new --workdir'):
      read(tmp_path)


@pytest.mark.parametrize('name, content', [('history.json', '{}'), ('history.json', '[1, 2]'),
                                           ('history.json', '[{"step": 6}]'), ('dataset.json', '[]'),
                                           ('eval.json', '"accuracy"')])
def test_other_workdir_files_the_zoo_did_not_write_are_named_in_one_line(tmp_path, name, content):
  (tmp_path / name).write_text(content)
  read = {'history.json': workdir_lib.read_history, 'dataset.json': workdir_lib.read_description,
          'eval.json': workdir_lib.read_eval}[name]
  with pytest.raises(ZooError, match=f'{name} is not .*; restore it or use a new --workdir'):
    read(tmp_path)


def test_a_workdir_of_another_model_is_refused_and_kept(tmp_path):
  train_in_process('cifar', f'--workdir={tmp_path}', *SMALL)  # the refusals below are the command line's
  before = sorted(p.name for p in (tmp_path / 'checkpoints').iterdir())
  result = run_experiment('cifar', f'--workdir={tmp_path}', *SMALL, '--model=mlp')
  assert_one_line_error(result, 'holds a cifar10/simple_cnn run', 'pass a new --workdir')
  eval_result = run_experiment('cifar', '--mode=eval', f'--workdir={tmp_path}', '--model=mlp')
  assert_one_line_error(eval_result, 'contradicts', 'drop the flag or pass another --workdir')
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == before
  assert json.loads((tmp_path / 'config.json').read_text())['model'] == 'simple_cnn'


def test_a_diverging_run_stops_at_a_named_step_and_keeps_its_last_good_checkpoint(tmp_path):
  flags = (f'--workdir={tmp_path}', '--epochs=3', '--batch_size=16', '--eval_batch_size=40',
           '--optimizer=sgd', '--checkpoint_every_steps=1', '--log_every_steps=1')
  result = run_experiment('cifar', *flags, '--learning_rate=1e12')
  assert_one_line_error(result, 'NaN/inf by step', 'Lower --learning_rate')
  stopped = int(re.search(r'by step (\d+)', result.stderr).group(1))
  kept = sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit())
  # Checked every step (--log_every_steps=1): the step before the NaN was saved, and nothing after it.
  assert kept and kept[-1] == stopped - 1, (kept, stopped)
  assert f'the last good checkpoint is step {kept[-1]}' in result.stderr
  params = restore_plain(tmp_path)['params']  # what was kept is good
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
