"""Mixup and CutMix (`zoo/data/mixing.py`) against a transcription of timm's `Mixup` (batch mode),
the loss on mixed targets, and the plan's draws. Training with them (exact resume, 1 and 2 devices):
tests/test_training_tools.py."""
import jax
import numpy as np
import optax
import pytest

from conftest import mock_data
from zoo.config import Config
from zoo.data import mixing
from zoo.errors import ZooError
from zoo.training import loop, steps

HEIGHT, WIDTH, BATCH = 8, 10, 6


def timm_mix(x: np.ndarray, lam: float, use_cutmix: bool, row: int, col: int):
  """timm.data.mixup.Mixup._mix_batch (NHWC here, timm's is NCHW) with rand_bbox's centre (row, col):
  (mixed images, the corrected lam)."""
  if use_cutmix:
    cut_rat = np.sqrt(1. - lam)
    cut_h, cut_w = int(HEIGHT * cut_rat), int(WIDTH * cut_rat)
    yl, yh = np.clip(row - cut_h // 2, 0, HEIGHT), np.clip(row + cut_h // 2, 0, HEIGHT)
    xl, xh = np.clip(col - cut_w // 2, 0, WIDTH), np.clip(col + cut_w // 2, 0, WIDTH)
    mixed = x.copy()
    mixed[:, yl:yh, xl:xh] = x[::-1][:, yl:yh, xl:xh]
    return mixed, 1. - (yh - yl) * (xh - xl) / float(HEIGHT * WIDTH)
  return x * lam + x[::-1] * (1. - lam), lam


@pytest.mark.parametrize('lam, use_cutmix, row, col', [(0.7, False, 0, 0), (0.3, True, 4, 5), (0.6, True, 0, 9),
                                                       (0.05, True, 7, 1)])
def test_a_batch_is_mixed_as_timm_mixes_it(lam, use_cutmix, row, col):
  images = np.random.default_rng(0).random((BATCH, HEIGHT, WIDTH, 3), np.float32)
  # The plan's centre is a uniform in [0, 1): the middle of the pixel timm's randint would give.
  draws = np.array([lam, float(use_cutmix), (row + 0.5) / HEIGHT, (col + 0.5) / WIDTH], np.float32)
  batch = {'inputs': images, 'partner_inputs': images[::-1], 'mix': np.tile(draws, (BATCH, 1)),
           'label': np.arange(BATCH), 'partner_label': np.arange(BATCH)[::-1], 'mask': np.ones(BATCH)}
  mixed = mixing.mixed_batch(batch)
  expected, expected_lam = timm_mix(images, lam, use_cutmix, row, col)
  np.testing.assert_allclose(mixed['inputs'], expected, rtol=1e-6)
  np.testing.assert_allclose(mixed['weight'], np.full(BATCH, expected_lam), rtol=1e-6)
  assert set(mixed) == {'inputs', 'weight', 'label', 'partner_label', 'mask'}


@pytest.mark.parametrize('outputs', [10, 1])
def test_the_loss_is_the_cross_entropy_with_mixed_targets(outputs):
  """timm's `mixup_target` (smoothed one-hots mixed by lam) and SoftTargetCrossEntropy; one output:
  the sigmoid's probability mixed alike."""
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(BATCH, outputs)).astype(np.float32)
  labels, partners = rng.integers(0, max(outputs, 2), BATCH), rng.integers(0, max(outputs, 2), BATCH)
  weight = np.array([0.9, 0.6, 0.5, 0.4, 0.1, 1.0], np.float32)
  smoothing = 0.1
  sums = steps.classification_sums(logits, labels, np.ones(BATCH), smoothing, partners, weight)
  if outputs == 1:
    target = lambda y: y * (1 - smoothing) + 0.5 * smoothing
    mixed = weight * target(labels) + (1 - weight) * target(partners)
    losses = optax.sigmoid_binary_cross_entropy(logits[:, 0], mixed)
    predicted = logits[:, 0] > 0
  else:
    one_hot = lambda y: optax.smooth_labels(jax.nn.one_hot(y, outputs), smoothing)
    mixed = weight[:, None] * one_hot(labels) + (1 - weight[:, None]) * one_hot(partners)
    losses = optax.softmax_cross_entropy(logits, mixed)
    predicted = logits.argmax(-1)
  assert float(sums['loss_sum']) == pytest.approx(float(np.sum(losses)), rel=1e-6)
  # Correct: the prediction is the label with the larger share.
  assert float(sums['correct']) == np.sum(predicted == np.where(weight >= 0.5, labels, partners))


def test_the_plan_is_the_seeds_and_epochs_and_pairs_mirrored_places_of_the_batch():
  order = np.random.default_rng(2).permutation(80).reshape(10, 8).astype(np.int32)
  noise = np.random.default_rng(3).random((10, 8, 3), np.float32)
  both = mixing.plan(order, noise, seed=0, epoch=1, mixup_alpha=0.4, cutmix_alpha=1.0)
  again = mixing.plan(order, noise, seed=0, epoch=1, mixup_alpha=0.4, cutmix_alpha=1.0)
  jax.tree.map(np.testing.assert_array_equal, both, again)
  other_epoch = mixing.plan(order, noise, seed=0, epoch=2, mixup_alpha=0.4, cutmix_alpha=1.0)
  assert not np.array_equal(both['mix'], other_epoch['mix'])
  np.testing.assert_array_equal(both['partner'], order[:, ::-1])
  np.testing.assert_array_equal(both['partner_noise'], noise[:, ::-1])
  mix = both['mix']
  assert mix.shape == (10, 8, mixing.MIX_COLUMNS) and (mix == mix[:, :1]).all()  # one draw per batch
  assert 0 < mix[..., 0].min() and mix[..., 0].max() < 1
  assert set(mix[:, 0, 1]) == {0.0, 1.0}  # both kinds of batch
  assert set(mixing.plan(order, noise, 0, 1, 0.4, 0.0)['mix'][:, 0, 1]) == {0.0}
  assert set(mixing.plan(order, noise, 0, 1, 0.0, 1.0)['mix'][:, 0, 1]) == {1.0}


def test_negative_alphas_and_text_data_are_one_error_line(tmp_path):
  with pytest.raises(ZooError, match=r'--cutmix_alpha=-1.0 is negative; pass a positive alpha'):
    Config(cutmix_alpha=-1.0).validate(1)
  config = Config(dataset='imdb_reviews', model='ngram', mixup_alpha=0.2, batch_size=16, vocab_size=100, max_length=20,
                  tensorboard=False,
                  split_cache='')
  with mock_data(), pytest.raises(ZooError, match=r'--mixup_alpha and --cutmix_alpha mix images, and imdb_reviews is '
                                                  r'text; drop them'):
    loop.train_and_evaluate(config, tmp_path / 'w')
  assert not (tmp_path / 'w' / 'checkpoints').exists()
