"""lab.ngram_sweep: each variant trains with its own model attributes and config fields,
one JSON line each (with the Naive Bayes accuracy when asked); a misspelt attribute is one error line."""
import json
import os
import subprocess
import sys

from conftest import ROOT, assert_one_line_error

# The sweep's own entry point on tfds' mock data (as tests/mock_experiment.py runs launch.run).
RUN_ON_MOCK_DATA = """
import tensorflow_datasets as tfds
from absl import app
from lab import ngram_sweep
from zoo.data import sources, tfds_source
tfds_source._online = lambda: True
sources._cache_path = lambda *args: None
with tfds.testing.mock_data(num_examples=96):
  app.run(ngram_sweep.main)
"""
FLAGS = ('--flagfile=experiments/recipes/imdb_ngram.flags', '--batch_size=16', '--eval_batch_size=48',
         '--vocab_size=200', '--max_length=32', '--epochs=1')


def sweep(tmp_path, variants):
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_NUM_CPU_DEVICES='1', TF_CPP_MIN_LOG_LEVEL='2')
  env.pop('XLA_FLAGS', None)
  return subprocess.run([sys.executable, '-c', RUN_ON_MOCK_DATA, *FLAGS, f'--workdir={tmp_path}',
                         f'--variants={json.dumps(variants)}'], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)


def test_each_variant_trains_with_its_overrides(tmp_path):
  variants = [{'name': 'recipe', 'naive_bayes': True},
              {'name': 'unigrams_frozen', 'model': {'max_n': 1}, 'rules': ['ratios:frozen'], 'config': {'epochs': 2}}]
  result = sweep(tmp_path, variants)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
  assert [row['variant'] for row in rows] == variants
  assert [len(row['eval_accuracy_per_epoch']) for row in rows] == [1, 2]  # the config override
  assert 0 <= rows[0]['naive_bayes_accuracy'] <= 1 and 'naive_bayes_accuracy' not in rows[1]
  for name, epochs in (('recipe', 1), ('unigrams_frozen', 2)):
    history = json.loads((tmp_path / name / 'history.json').read_text())
    assert [h['eval_accuracy'] for h in history] == rows[epochs - 1]['eval_accuracy_per_epoch']


def test_an_unknown_model_setting_is_one_error_line(tmp_path):
  result = sweep(tmp_path, [{'name': 'typo', 'model': {'maxn': 3}}])
  assert_one_line_error(result, "variant 'typo': --model.maxn is not a setting of ngram",
                        'its settings are: --model.max_n, --model.num_buckets')
