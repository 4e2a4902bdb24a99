"""The production read path end to end, on a dataset the test prepares: TFDS's prepared TFRecord
files read by zoo/data/tfds_source.py, the split cache, the training loop and --mode=eval. No mock
data, nothing skipped: it runs wherever the tests run."""
import json
import os

import pytest

from conftest import last_json_line, real_data_dir, run_experiment
import tiny_tfds

# Measured 2026-12-02 (2-core AMD EPYC CPU, the first run's command below): 100 % on the test split
# after its one epoch, for seeds 0, 1 and 2; chance is 1/3. The bar leaves room for another
# library version; a read path that mixes images up with one another's labels stays near 1/3.
ACCURACY_BAR = 0.9


@pytest.fixture(scope='module')
def colours(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('tfds')
  tiny_tfds.ZooTinyColours(data_dir=str(data_dir)).download_and_prepare()
  return data_dir


def scramble_keeping_size_and_time(path):
  """Overwrites a file's bytes with the same number of others, its modification time kept: the
  split cache's key still matches, and anything that reads the file gets garbage."""
  stat = path.stat()
  path.write_bytes(bytes(255 - b for b in path.read_bytes()))
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_prepared_tfds_data_trains_from_the_files_then_from_the_split_cache_and_evaluates(colours, tmp_path):
  home = tmp_path / 'home'
  home.mkdir()
  flags = (f'--data_dir={colours}', '--dataset=zoo_tiny_colours', '--epochs=1', '--batch_size=30',
           '--eval_batch_size=30')
  run = lambda *more: run_experiment('images', *flags, *more, mock=False, env={'HOME': str(home)})

  first = run(f'--workdir={tmp_path / "first"}')
  assert first.returncode == 0, first.stderr[-3000:]
  assert 'read from the split cache' not in first.stderr
  trained = last_json_line(first.stdout)
  assert trained['eval_accuracy'] >= ACCURACY_BAR, trained
  cached = sorted(os.path.join(root, f) for root, _, files in os.walk(os.environ['XDG_CACHE_HOME'])
                  for f in files if 'zoo_tiny_colours' in root)
  assert len(cached) == 2, cached  # train and test, in the default --split_cache (under XDG_CACHE_HOME)

  for records in colours.rglob('*.tfrecord*'):
    scramble_keeping_size_and_time(records)  # from now on only the cache can serve the splits
  second = run(f'--workdir={tmp_path / "second"}')
  assert second.returncode == 0, second.stderr[-3000:]
  assert second.stderr.count('read from the split cache') == 2, second.stderr[-3000:]
  again = last_json_line(second.stdout)
  assert (again['eval_accuracy'], again['eval_loss']) == (trained['eval_accuracy'], trained['eval_loss'])

  evaluation = run_experiment('images', '--mode=eval', f'--workdir={tmp_path / "first"}', f'--data_dir={colours}',
                              mock=False, env={'HOME': str(home)})
  assert evaluation.returncode == 0, evaluation.stderr[-3000:]
  assert 'read from the split cache' in evaluation.stderr
  assert last_json_line(evaluation.stdout)['accuracy'] == trained['eval_accuracy']
  assert json.loads((tmp_path / 'first' / 'eval.json').read_text())['num_examples'] == 90
  assert not list(home.iterdir())  # every cache went to the test run's folder


def test_runs_write_nothing_into_the_home_directory(tmp_path):
  """A text run (Keras's tokenizer, matplotlib's plot, JAX's compilation cache) with HOME in an
  empty folder: tests/conftest.py has sent every cache elsewhere."""
  home = tmp_path / 'home'
  home.mkdir()
  result = run_experiment('imdb', f'--workdir={tmp_path / "w"}', '--model=lstm', '--epochs=1', '--batch_size=16',
                          '--eval_batch_size=16', '--vocab_size=50', '--max_length=8', examples=32,
                          env={'HOME': str(home)})
  assert result.returncode == 0, result.stderr[-3000:]
  assert not list(home.iterdir())
  compiled = os.path.join(os.environ['XDG_CACHE_HOME'], 'zoo', 'jax_compilation')
  assert os.listdir(compiled)  # the default --compilation_cache, in the test run's folder
  assert list((tmp_path / 'w').glob('history.png'))


def test_missing_real_data_skips_locally_and_fails_under_ci(tmp_path, monkeypatch):
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path))  # holds no dataset
  monkeypatch.delenv('CI', raising=False)
  with pytest.raises(pytest.skip.Exception, match='does not hold cifar10'):
    real_data_dir('cifar10')
  monkeypatch.setenv('CI', 'true')
  with pytest.raises(pytest.fail.Exception, match='does not hold cifar10: CI runs every real-data test'):
    real_data_dir('cifar10')
  (tmp_path / 'cifar10').mkdir()
  assert real_data_dir('cifar10') == str(tmp_path)
