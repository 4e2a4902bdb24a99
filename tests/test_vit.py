"""The Vision Transformer (`zoo/models/vit.py`): shapes for both tokenizers and pools, its settings
as flags, clear errors for a patch size or head count that does not fit, and a short training on
a folder of images that resumes bit for bit."""
import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from resume_check import assert_resumes_exactly
from test_datasets import image_folder
from zoo import checkpoints
from zoo.config import Config
from zoo.errors import ZooError
from zoo.models import MODELS, contract_of, create_model, head_scope
from zoo.training import loop

TINY = {'width': 16, 'depth': 2, 'num_heads': 2, 'mlp_dim': 32}


def _init(settings, shape=(2, 32, 32, 3)):
  model = create_model('vit', {**TINY, **settings}, num_classes=5)
  images = jax.random.uniform(jax.random.key(0), shape)
  return model, jax.jit(model.init)(jax.random.key(0), images), images


@pytest.mark.parametrize('tokenizer', ['patch', 'conv'])
@pytest.mark.parametrize('pool', ['gap', 'token'])
def test_logits_and_token_grid_for_each_tokenizer_and_pool(tokenizer, pool):
  model, variables, images = _init({'tokenizer': tokenizer, 'pool': pool, 'patch_size': 4}, (3, 16, 24, 3))
  logits = jax.jit(model.apply)(variables, images)
  assert logits.shape == (3, 5) and logits.dtype == jnp.float32
  params = variables['params']
  assert params['pos_embedding'].shape == (1, 4 * 6, 16)  # a 4x6 grid of tokens, either tokenizer
  assert ('cls' in params) == (pool == 'token')
  assert head_scope(model, images) == 'head'
  np.testing.assert_array_equal(params['head']['kernel'], 0)  # big_vision's zero-initialised head
  blocks = [k for k in params['Transformer'] if k.startswith('encoderblock_')]
  assert len(blocks) == 2 and 'encoder_norm' in params['Transformer']


def test_dropout_acts_in_training_only_and_follows_the_example():
  model, variables, images = _init({'dropout': 0.5})
  head = variables['params']['head']  # a random head instead of the zero one, so dropout shows in the logits
  head['kernel'] = jax.random.normal(jax.random.key(5), head['kernel'].shape)
  apply = jax.jit(model.apply, static_argnames='train')
  np.testing.assert_array_equal(apply(variables, images), apply(variables, images))
  train = lambda key, x: apply(variables, x, train=True, rngs={'dropout': key})
  assert not np.allclose(train(jax.random.key(1), images), train(jax.random.key(2), images))
  # Each row's mask is drawn from its global index: the first row alone gets the mask it gets in the batch.
  np.testing.assert_allclose(train(jax.random.key(1), images[:1]), train(jax.random.key(1), images)[:1], rtol=1e-5)


def test_tta_averages_the_views_at_evaluation_only():
  model, variables, images = _init({'tokenizer': 'conv'})
  head = variables['params']['head']  # a random head instead of the zero one, so the logits differ by view
  head['kernel'] = jax.random.normal(jax.random.key(5), head['kernel'].shape)
  plain = lambda x, apply=jax.jit(model.apply): apply(variables, x)  # one compile: every view has the same shape
  with_tta = lambda level: create_model('vit', {**TINY, 'tokenizer': 'conv', 'tta_level': level}, num_classes=5)
  assert not np.allclose(plain(images), plain(images[:, :, ::-1]))
  mirrored = lambda x: (plain(x) + plain(x[:, :, ::-1])) / 2
  np.testing.assert_allclose(jax.jit(with_tta(1).apply)(variables, images), mirrored(images), rtol=1e-5, atol=1e-6)
  # Level 2: half the image's two views, a quarter each of its 1-pixel translations' (reflect padding).
  size = images.shape[1]
  padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='reflect')
  expected = mirrored(images) / 2 + (mirrored(padded[:, :size, :size]) + mirrored(padded[:, 2:, 2:])) / 4
  np.testing.assert_allclose(jax.jit(with_tta(2).apply)(variables, images), expected, rtol=1e-5, atol=1e-6)
  train = lambda m: jax.jit(m.apply, static_argnames='train')(variables, images, train=True)
  np.testing.assert_array_equal(train(with_tta(2)), train(model))
  assert contract_of('vit').settings['tta_level'].role == 'eval'  # --mode=eval may choose it
  with pytest.raises(ZooError, match=r'--model.tta_level=3 is unknown for vit; pass 0 \(none\), 1 \(mirror\), 2 '):
    _init({'tta_level': 3})


def test_registered_with_its_settings_and_rules():
  assert MODELS['vit'].__name__ == 'ViT'
  described = contract_of('vit')
  assert described.input_kind == 'image'
  assert {'patch_size', 'width', 'depth', 'num_heads', 'mlp_dim', 'pool', 'dropout', 'tokenizer'} <= set(
      described.settings)
  assert any('pos_embedding' in rule for rule in described.rules)


def test_help_lists_the_models_settings_as_flags():
  result = subprocess.run([sys.executable, '-m', 'experiments.cifar', '--help'], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode in (0, 1) and 'Traceback' not in result.stderr, result.stderr[-3000:]  # absl exits 1
  for flag in ('patch_size', 'tokenizer', 'pool', 'num_heads'):
    assert f'--model.{flag}' in result.stdout, flag


@pytest.mark.parametrize('settings, message', [
    ({'patch_size': 5}, r'--model.patch_size=5 does not divide the 32x32 images; pass one of 1, 2, 4, 8, 16, 32'),
    ({'patch_size': 6, 'tokenizer': 'conv'}, r'--model.patch_size=6 does not divide'),
    ({'patch_size': 1, 'tokenizer': 'conv'}, None),
    ({'num_heads': 3}, r'--model.num_heads=3 does not divide --model.width=16'),
    ({'pool': 'max'}, r"--model.pool='max' is unknown; choose one of: gap, token"),
    ({'tokenizer': 'resnet'}, r"--model.tokenizer='resnet' is unknown; choose one of: patch, conv"),
])
def test_settings_that_do_not_fit_the_images_are_one_clear_error(settings, message):
  if message is None:  # patch size 1 with the conv tokenizer: a token per pixel, no pooling
    assert _init(settings, (1, 4, 4, 3))[1]['params']['pos_embedding'].shape == (1, 16, 16)
    return
  with pytest.raises(ZooError, match=message):
    _init(settings)


def test_conv_tokenizer_needs_a_power_of_two():
  with pytest.raises(ZooError, match=r'--model.patch_size=3 is not a power of 2.*pass 2, 4 or 8'):
    _init({'patch_size': 3, 'tokenizer': 'conv'}, (1, 12, 12, 3))


def _config(folder, **fields) -> Config:
  return Config(**{'image_folder': str(folder), 'image_size': 8, 'model': 'vit', 'epochs': 2, 'batch_size': 6,
                    'eval_batch_size': 8, 'optimizer': 'adamw', 'learning_rate': 0.003, 'weight_decay': 0.05,
                    'schedule': 'warmup_cosine', 'warmup_epochs': 0.5, 'augment': True, 'crop_padding': 1,
                    'checkpoint_every_steps': 2, 'keep_checkpoints': 20, 'tensorboard': False, 'split_cache': '',
                    'model_settings': {**TINY, 'depth': 1, 'patch_size': 2, 'tokenizer': 'conv', 'pool': 'token',
                                       'dropout': 0.1},
                    **fields})


def test_trains_and_resumes_bit_identical(tmp_path, caplog):
  """Two epochs of 6 steps on a folder of images (dropout and augmentation on); a copy of the run
  "killed" after step 8 resumes to the same history and the same arrays."""
  folder = image_folder(tmp_path / 'images')
  workdir = tmp_path / 'w'
  history = loop.train_and_evaluate(_config(folder), workdir)
  assert [h['step'] for h in history] == [6, 12] and all(np.isfinite(h['train_loss']) for h in history)
  assert json.loads((workdir / 'config.json').read_text())['model_settings']['tokenizer'] == 'conv'
  assert_resumes_exactly(_config(folder), workdir, tmp_path / 'resumed', history, caplog, step=8, steps_per_epoch=6)
  assert not np.allclose(checkpoints.restore_arrays(workdir)[1]['params']['head']['kernel'], 0)  # it learned


def test_a_patch_size_that_does_not_divide_stops_training_with_one_line(tmp_path):
  folder = image_folder(tmp_path / 'images')
  config = dataclasses.replace(_config(folder), model_settings={**TINY, 'patch_size': 3})
  with pytest.raises(ZooError, match=r'--model.patch_size=3 does not divide the 8x8 images'):
    loop.train_and_evaluate(config, tmp_path / 'w')
  assert not (tmp_path / 'w').exists()  # nothing written: the corrected command starts afresh
