"""lab.ngram_sweep: k-fold cross-validation where every text is evaluated once, a baseline and an
ensemble on the same folds, reruns that train only what is new, reviews of one film kept in one
fold, and one error line for a malformed variant."""
import dataclasses
import json

import numpy as np
import pytest

from conftest import ROOT
from zoo.errors import ZooError


@pytest.fixture
def mock_imdb(monkeypatch):
  """tfds' mock IMDB (96 random reviews), as tests/mock_experiment.py serves it."""
  import tensorflow_datasets as tfds
  from zoo.data import sources, tfds_source
  monkeypatch.setattr(tfds_source, '_online', lambda: True)
  monkeypatch.setattr(sources, '_cache_path', lambda *args: None)
  with tfds.testing.mock_data(num_examples=96):
    yield


def recipe():
  from experiments import launch
  config = launch.read_recipe(ROOT / 'experiments/recipes/imdb_ngram.flags')
  return dataclasses.replace(config, batch_size=16, eval_batch_size=48, vocab_size=200, max_length=32, epochs=1,
                             train_split='train', tensorboard=False)


def test_every_text_is_evaluated_once_and_a_rerun_trains_nothing(mock_imdb, tmp_path, capsys):
  from lab import ngram_sweep
  variants = [{'name': 'recipe'},
              {'name': 'unigrams', 'model': {'max_n': 1}, 'rules': ['ratios:frozen'], 'config': {'epochs': 2}},
              {'name': 'nbsvm', 'baseline': {'C': 0.1}},
              {'name': 'mean', 'ensemble': ['recipe', 'nbsvm'], 'weights': [3, 1]}]
  lines = ngram_sweep.sweep(recipe(), variants, 3, tmp_path, None, grouped=False)
  rows = [json.loads(line) for line in (tmp_path / 'results.jsonl').read_text().splitlines()]
  assert len(rows) == 12 and {r['fold'] for r in rows} == {0, 1, 2}
  assert np.load(tmp_path / 'folds/train-contiguous-of-3.npy').tolist() == [0] * 32 + [1] * 32 + [2] * 32
  for fold in range(3):
    by_name = {r['variant']: r for r in rows if r['fold'] == fold}
    assert len(by_name['unigrams']['accuracy_per_epoch']) == 2  # the config override
    history = json.loads((tmp_path / f'fold{fold}/recipe/history.json').read_text())
    assert by_name['recipe']['accuracy'] == pytest.approx(history[-1]['eval_accuracy'])  # predict = the loop's eval
    probabilities = {n: np.load(tmp_path / f'probabilities/{n}.fold{fold}.npy') for n in by_name}
    assert {len(p) for p in probabilities.values()} == {32}  # the fold's 32 texts, each once
    np.testing.assert_allclose(probabilities['mean'], 0.75 * probabilities['recipe'] + 0.25 * probabilities['nbsvm'],
                               rtol=1e-6)
  recipe_folds = [r['accuracy'] for r in rows if r['variant'] == 'recipe']
  assert lines[0]['variant'] == 'recipe' and lines[0]['accuracy'] == pytest.approx(np.mean(recipe_folds), abs=1e-5)
  assert lines[0]['minus_reference'] == 0
  assert lines[0]['standard_error'] == pytest.approx(np.std(recipe_folds, ddof=1) / np.sqrt(3), abs=1e-5)
  capsys.readouterr()

  again = ngram_sweep.sweep(recipe(), variants, 3, tmp_path, None, grouped=False)
  assert again == lines and len((tmp_path / 'results.jsonl').read_text().splitlines()) == 12
  assert '"fold"' not in capsys.readouterr().out  # nothing ran again: only the summary was printed


def test_texts_that_share_rare_words_stay_together():
  """Two reviews of a film share its names; a third review shares only common words with them."""
  from lab import ngram_sweep
  film = 'kurosawa mifune shimura rashomon'
  texts = [f'{film} great film', f'{film} dull film', 'a good film', 'a bad plot', 'kurosawa again film']
  groups = ngram_sweep.shared_word_groups(texts, min_shared=4, max_texts=3)
  assert groups[0] == groups[1] and len(set(groups[1:].tolist())) == 4


def test_a_malformed_variant_names_its_fix(mock_imdb, tmp_path):
  from lab import ngram_sweep
  for variants, message in (([{'name': 'typo', 'model': {'maxn': 3}}], "variant 'typo': --model.maxn is not a setting"),
                            ([{'name': 'e', 'ensemble': ['later']}, {'name': 'later'}], 'not an earlier variant'),
                            ([{'name': 'b', 'baseline': {'c': 1}}], 'the baseline has no field c')):
    with pytest.raises(ZooError, match=message):
      ngram_sweep.sweep(recipe(), variants, 2, tmp_path, None, grouped=False)
