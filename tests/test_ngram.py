"""The n-gram model: its hashing, its Naive Bayes ratios worked by hand, its starting point (the NB
classifier), one-vs-rest classes, and train / resume / eval / predict through the command line."""
import json
import shutil

import jax
import numpy as np
import pytest

from conftest import last_json_line, run_experiment, train_in_process
from zoo.models import contract_of, MODELS
from zoo.models.ngram import (NgramClassifier, bucket_document_counts, log_count_ratios, log_prior_ratios,
                              ngram_buckets, present_buckets)

GOOD, FILM, PLOT, BAD = 2, 3, 4, 5
# Post-padded token ids (0 = padding): "good good film" and "good plot" are positive, "bad film" negative.
DOCS = np.array([[GOOD, GOOD, FILM, 0], [GOOD, PLOT, 0, 0], [BAD, FILM, 0, 0]], np.int32)
LABELS = np.array([1, 1, 0], np.int32)
BUCKETS = 16


def unigram_bucket(token: int, num_buckets: int = BUCKETS) -> int:
  return int(ngram_buckets(np.array([[token]]), 1, num_buckets)[0][0, 0])


def test_ratios_equal_the_hand_worked_example():
  """Unigrams, 16 buckets, alpha 1. Documents containing each word (a repeat counts once):
     good: 2 positive, 0 negative; film: 1, 1; plot: 1, 0; bad: 0, 1.
  p = 1 + positive counts, |p|_1 = 16 + 4 (two words in each positive document) = 20;
  q = 1 + negative counts, |q|_1 = 16 + 2 = 18. r = log((p / 20) / (q / 18)):
     good log(3/20 * 18/1) = log 2.7, film log(2/20 * 18/2) = log 0.9, plot log(2/20 * 18/1) = log 1.8,
     bad log(1/20 * 18/2) = log 0.45, and every empty bucket log(1/20 * 18/1) = log 0.9."""
  buckets = {word: unigram_bucket(word) for word in (GOOD, FILM, PLOT, BAD)}
  assert len(set(buckets.values())) == 4  # the example needs no collision
  counts = bucket_document_counts(DOCS, LABELS, 2, max_n=1, num_buckets=BUCKETS)
  assert counts.shape == (BUCKETS, 2)
  assert [tuple(counts[buckets[w]]) for w in (GOOD, FILM, PLOT, BAD)] == [(0, 2), (1, 1), (0, 1), (1, 0)]
  assert counts.sum() == 6
  ratios = log_count_ratios(counts, alpha=1.0)
  assert ratios.shape == (BUCKETS, 1)
  expected = np.full(BUCKETS, np.log(0.9))
  for word, value in ((GOOD, 2.7), (FILM, 0.9), (PLOT, 1.8), (BAD, 0.45)):
    expected[buckets[word]] = np.log(value)
  np.testing.assert_allclose(ratios[:, 0], expected, rtol=1e-6)
  np.testing.assert_allclose(log_prior_ratios(LABELS, 2), [np.log(3 / 2)])  # (2 + 1) / (1 + 1)


def test_bigrams_and_trigrams_are_features_and_padding_is_not():
  """"good good film" holds 2 distinct unigrams, 2 bigrams (good good, good film) and 1 trigram;
  the padding after it adds nothing, however long."""
  for max_n, expected in ((1, 2), (2, 4), (3, 5)):
    bags = []
    for padding in (0, 1, 20):
      ids, present = map(np.asarray, present_buckets(np.pad(DOCS[:1, :3], ((0, 0), (0, padding))), max_n, 2 ** 20))
      assert int(present.sum()) == expected
      bags.append(set(ids[present].tolist()))
    assert bags[0] == bags[1] == bags[2]


def test_hashing_is_fixed_and_tells_order_and_length_apart():
  """The bucket of an n-gram is part of every checkpoint's meaning: these values must never change."""
  ids, real = map(np.asarray, ngram_buckets(np.array([[GOOD, FILM, 0]]), 3, 2 ** 22))
  # good, film, pad | good film, film pad, pad pad | good film pad, film pad pad, pad pad pad
  assert ids.tolist() == [[292847, 1173469, 2293969, 52772, 4173075, 4187623, 120959, 82610, 2738955]]
  assert real.tolist() == [[True, True, False, True, False, False, False, False, False]]
  again = jax.jit(ngram_buckets, static_argnums=(1, 2))(np.array([[GOOD, FILM, 0]]), 3, 2 ** 22)[0]
  assert np.asarray(again).tolist() == ids.tolist()  # jitted or not, the same buckets
  swapped = np.asarray(ngram_buckets(np.array([[FILM, GOOD]]), 2, 2 ** 22)[0])
  assert swapped[0, 2] != ids[0, 3]  # "film good" is not "good film"
  assert len({ids[0, 0], ids[0, 1], ids[0, 3]}) == 3


def nb_scores(tokens, ratios, prior, max_n, num_buckets):
  """The NB classifier by its definition: r . x + b, x the binary bag of the review's n-grams'
  buckets (built here with a Python set per review, not with the model's sort)."""
  ids, real = map(np.asarray, ngram_buckets(tokens, max_n, num_buckets))
  bags = np.zeros((len(tokens), num_buckets))
  for row in range(len(tokens)):
    bags[row, sorted(set(ids[row][real[row]].tolist()))] = 1
  return bags @ ratios + prior


def test_the_untrained_model_is_the_naive_bayes_classifier():
  rng = np.random.default_rng(0)
  tokens = rng.integers(2, 30, (40, 10)).astype(np.int32)
  tokens[:, 7:] = 0
  tokens[5, 3:] = 0
  labels = (tokens[:, 0] < 12).astype(np.int32)  # a learnable rule for the ratios to find
  model = NgramClassifier(vocab_size=30, num_buckets=2 ** 12, max_n=3, min_documents=0)  # plain hashing
  params = model.init(jax.random.key(0), tokens[:1])['params']
  params = model.init_from_data(jax.device_get(params), tokens, labels)
  logits = np.asarray(model.apply({'params': params}, tokens))
  assert logits.shape == (40, 1)
  scores = nb_scores(tokens, np.asarray(params['ratios']), log_prior_ratios(labels, 2), model.max_n, 2 ** 12)
  np.testing.assert_allclose(logits, model.scale * scores, rtol=1e-4, atol=1e-5)
  assert ((logits[:, 0] > 0) == labels).mean() > 0.9


def test_more_classes_get_one_vs_rest_ratios_and_one_logit_each():
  rng = np.random.default_rng(1)
  tokens = rng.integers(2, 30, (60, 8)).astype(np.int32)
  labels = rng.integers(0, 4, 60).astype(np.int32)
  model = NgramClassifier(vocab_size=30, num_classes=4, num_buckets=2 ** 10, min_documents=0)
  params = model.init_from_data(jax.device_get(model.init(jax.random.key(0), tokens[:1])['params']), tokens, labels)
  assert params['ratios'].shape == (2 ** 10, 4) and params['bias'].shape == (4,)
  assert model.apply({'params': params}, tokens).shape == (60, 4)
  counts = bucket_document_counts(tokens, labels, 4, model.max_n, 2 ** 10)
  for label in range(4):  # class c's column is the two-class ratio of "c" against "not c"
    binary = np.stack([counts.sum(1) - counts[:, label], counts[:, label]], 1)
    np.testing.assert_allclose(params['ratios'][:, label], log_count_ratios(binary)[:, 0], rtol=1e-5, atol=1e-6)


def test_ngram_is_registered_as_a_text_model():
  assert MODELS['ngram'] is NgramClassifier and NgramClassifier.input_kind == 'text'
  contract = contract_of('ngram')
  assert contract.rules == ('owners:frozen',) and contract.init_examples is None  # the ratios train too


FLAGS = ('--model=ngram', '--epochs=2', '--batch_size=16', '--eval_batch_size=40', '--vocab_size=200',
         '--max_length=32', '--learning_rate=0.01', '--checkpoint_every_steps=3', '--keep_checkpoints=20')


@pytest.mark.slow
def test_ngram_trains_resumes_evaluates_and_predicts(tmp_path):
  """2 epochs of 6 steps on mock IMDB; a copy cut back to step 3 resumes and ends identical. Trained
  in this process (`train_in_process`, the command line's Config), evaluated on 2 devices and asked
  for predictions through the command line."""
  workdir = tmp_path / 'run'
  train_in_process('imdb', f'--workdir={workdir}', *FLAGS)
  history = json.loads((workdir / 'history.json').read_text())
  assert [h['step'] for h in history] == [6, 12]

  interrupted = tmp_path / 'interrupted'
  shutil.copytree(workdir, interrupted)
  for step_dir in (interrupted / 'checkpoints').iterdir():  # as if killed after step 3
    if step_dir.name.isdigit() and int(step_dir.name) > 3:
      shutil.rmtree(step_dir)
  (interrupted / 'history.json').write_text('[]')
  _, log = train_in_process('imdb', f'--workdir={interrupted}', *FLAGS)
  assert 'Resuming from step 3 in' in log  # it went on from the checkpoint, not from step 0
  import zoo
  first, second = zoo.load(workdir), zoo.load(interrupted)
  assert first.step == second.step == 12
  jax.tree.map(np.testing.assert_array_equal, first.variables, second.variables)
  # Set from the training split, then trained, and kept: the buckets no training text fills get no
  # gradient and keep the Naive Bayes ratio of an unseen n-gram, log(S_neg / S_pos) with S_c class c's
  # smoothed total count, the same non-zero value for every such bucket (a zero start would stay 0).
  values, counts = np.unique(np.asarray(first.variables['params']['ratios']), return_counts=True)
  unseen = values[counts.argmax()]
  assert counts.max() > 0.9 * counts.sum() and unseen != 0 and abs(unseen) < 1

  evaluation = run_experiment('imdb', '--mode=eval', f'--workdir={workdir}', devices=2)
  assert evaluation.returncode == 0, evaluation.stderr[-3000:]
  report = last_json_line(evaluation.stdout)
  assert report['num_examples'] == 96 and report['accuracy'] == history[-1]['eval_accuracy']

  predict = run_experiment('imdb', '--mode=predict', f'--workdir={workdir}', '--text=good film', '--text=bad')
  assert predict.returncode == 0, predict.stderr[-3000:]
  rows = [json.loads(line) for line in predict.stdout.splitlines() if line.startswith('{')]
  assert [r['text'] for r in rows] == ['good film', 'bad']
  np.testing.assert_allclose(first.predict(['good film', 'bad'])[:, 1], [r['p_positive'] for r in rows], atol=1e-4)


def tokens_in_bucket(bucket: int, count: int, num_buckets: int = 2) -> list[int]:
  """The first `count` token ids >= 2 whose unigram lands in `bucket`."""
  return [t for t in range(2, 200) if unigram_bucket(t, num_buckets) == bucket][:count]


def test_a_bucket_belongs_to_the_ngram_in_the_most_documents():
  """Unigrams, 2 buckets, min_documents=2. A, B, C share bucket 0: A is in 3 documents (twice in one:
  counted once), B in 2, C in 1; D alone in bucket 1, in 2 documents. A owns bucket 0 and D bucket 1:
  the ratios come from their document counts alone, and B and C are no features (a review of them
  scores the bias). With min_documents=4 no n-gram is in enough documents: every review scores the bias."""
  from zoo.models.ngram import ngram_keys
  a, b, c = tokens_in_bucket(0, 3)
  (d,) = tokens_in_bucket(1, 1)
  docs = np.array([[a, a, b], [a, d, 0], [a, c, 0], [b, d, 0]], np.int32)
  labels = np.array([1, 1, 0, 0], np.int32)
  model = NgramClassifier(vocab_size=200, num_buckets=2, max_n=1, min_documents=2)
  params = model.init_from_data(jax.device_get(model.init(jax.random.key(0), docs[:1])['params']), docs, labels)
  fingerprints = np.asarray(ngram_keys(np.array([[a, d, b, c]]), 1, 2)[1])[0]
  assert len(set(fingerprints[[0, 2, 3]].tolist())) == 3  # the example needs A, B, C told apart
  np.testing.assert_array_equal(params['owners'], fingerprints[:2])
  # A: 2 positive documents, 1 negative; D: 1 and 1. p = 1 + (2, 1), q = 1 + (1, 1).
  np.testing.assert_allclose(params['ratios'][:, 0], np.log(np.array([3, 2]) / 5) - np.log(np.array([2, 2]) / 4),
                             rtol=1e-6)
  reviews = np.array([[b, c, b], [a, 0, 0], [a, b, c]], np.int32)
  logits = np.asarray(model.apply({'params': params}, reviews))[:, 0]
  bias, a_alone = float(params['bias'][0]), float(params['bias'][0] + model.scale * params['ratios'][0, 0])
  np.testing.assert_allclose(logits, [bias, a_alone, a_alone], rtol=1e-6)
  # float16, as the shipped models are packed, holds every fingerprint exactly.
  half = dict(params, owners=np.asarray(params['owners']).astype(np.float16))
  np.testing.assert_allclose(np.asarray(model.apply({'params': half}, reviews))[:, 0], logits, rtol=1e-6)

  strict = NgramClassifier(vocab_size=200, num_buckets=2, max_n=1, min_documents=4)
  params = strict.init_from_data(jax.device_get(strict.init(jax.random.key(0), docs[:1])['params']), docs, labels)
  assert np.all(np.asarray(params['owners']) == -1)
  np.testing.assert_allclose(np.asarray(strict.apply({'params': params}, reviews))[:, 0], float(params['bias'][0]))


def test_no_optimizer_moves_the_owner_table():
  """The model's own rule freezes the owners: a gradient and weight decay move every other parameter,
  the owners stay the training split's fingerprints, bit for bit."""
  import dataclasses
  import optax
  from zoo.config import Config
  from zoo.training.optimizers import create_optimizer, treatments_for
  params = {'weights': np.ones((4, 1), np.float32), 'ratios': np.ones((4, 1), np.float32),
            'bias': np.zeros(1, np.float32), 'owners': np.array([-1, 7, 2047, 12], np.float32)}
  for optimizer in ('adamw', 'sgd'):
    config = dataclasses.replace(Config(), optimizer=optimizer, learning_rate=0.1, weight_decay=0.5, epochs=2)
    tx = create_optimizer(config, 5, treatments_for(params, NgramClassifier.rules))
    state, moved = tx.init(params), params
    for _ in range(3):
      updates, state = tx.update(jax.tree.map(np.ones_like, moved), state, moved)
      moved = optax.apply_updates(moved, updates)
    np.testing.assert_array_equal(moved['owners'], params['owners'])
    assert not np.allclose(moved['weights'], 1)


def test_parameters_from_before_owned_buckets_are_read_by_plain_hashing():
  """A checkpoint trained before owned buckets has no `owners`: the model (owned buckets by default)
  then scores every n-gram by its bucket, as that checkpoint was trained to."""
  rng = np.random.default_rng(2)
  tokens = rng.integers(2, 30, (20, 8)).astype(np.int32)
  labels = (tokens[:, 0] < 15).astype(np.int32)
  plain = NgramClassifier(vocab_size=30, num_buckets=2 ** 10, min_documents=0)
  params = plain.init_from_data(jax.device_get(plain.init(jax.random.key(0), tokens[:1])['params']), tokens, labels)
  assert 'owners' not in params and NgramClassifier.min_documents > 0
  owned = NgramClassifier(vocab_size=30, num_buckets=2 ** 10)
  np.testing.assert_array_equal(owned.apply({'params': params}, tokens), plain.apply({'params': params}, tokens))
