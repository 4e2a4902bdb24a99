"""The Transformer text classifier (`zoo/models/transformer.py`): shapes, padding that changes
nothing, its settings as flags, clear errors, and a short training on a folder of texts that
resumes bit for bit."""
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from resume_check import assert_resumes_exactly
from zoo.config import Config
from zoo.errors import ZooError
from zoo.models import contract_of, create_model, head_scope

TINY = {'embed_dim': 16, 'depth': 2, 'num_heads': 2, 'mlp_dim': 32, 'max_length': 40}
VOCAB = 50


def _tokens(rows=4, length=12, seed=0):
  """Post-padded token ids of lengths 1..length, OOV ids (1) among them."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, VOCAB, (rows, length))
  lengths = np.linspace(1, length, rows).astype(int)
  return jnp.asarray(np.where(np.arange(length) < lengths[:, None], tokens, 0), jnp.int32)


def _init(settings=None, num_classes=1):
  model = create_model('transformer', {**TINY, **(settings or {})}, num_classes=num_classes, vocab_size=VOCAB)
  tokens = _tokens()
  variables = jax.jit(model.init)(jax.random.key(0), tokens)
  return model, variables, tokens


@pytest.mark.parametrize('num_classes', [1, 4])
def test_one_logit_for_two_classes_or_one_per_class(num_classes):
  model, variables, tokens = _init(num_classes=num_classes)
  logits = jax.jit(model.apply)(variables, tokens)
  assert logits.shape == (4, num_classes) and np.isfinite(logits).all()
  assert head_scope(model, tokens) == 'head'
  assert variables['params']['pos_embedding'].shape == (1, 40, 16)


def test_appending_padding_changes_no_logit():
  model, variables, tokens = _init({'dropout': 0.3})
  apply = jax.jit(model.apply)  # one compilation per length, rather than op by op
  logits = apply(variables, tokens)
  for extra in (1, 7, 28):
    padded = jnp.pad(tokens, ((0, 0), (0, extra)))
    np.testing.assert_allclose(apply(variables, padded), logits, rtol=1e-6, atol=1e-6)
  # What the padding holds does matter when it is not padding: the mask is what keeps it out.
  changed = jnp.where(tokens == 0, 7, tokens)
  assert not np.allclose(apply(variables, changed), logits)


def test_an_empty_text_gives_finite_logits():
  model, variables, _ = _init()
  assert np.isfinite(model.apply(variables, jnp.zeros((2, 12), jnp.int32))).all()


def test_registered_with_its_settings():
  described = contract_of('transformer')
  assert described.input_kind == 'text'
  assert {'embed_dim', 'depth', 'num_heads', 'mlp_dim', 'dropout', 'max_length'} <= set(described.settings)


def test_help_lists_the_models_settings_as_flags():
  result = subprocess.run([sys.executable, '-m', 'experiments.imdb', '--help'], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode in (0, 1) and 'Traceback' not in result.stderr, result.stderr[-3000:]  # absl exits 1
  for flag in ('embed_dim', 'num_heads', 'max_length'):
    assert f'--model.{flag}' in result.stdout, flag


@pytest.mark.parametrize('settings, message', [
    ({'num_heads': 3}, r'--model.num_heads=3 does not divide --model.embed_dim=16'),
    ({'max_length': 8}, r'inputs of 12 tokens are longer than the position table \(--model.max_length=8\); '
                        r'pass --model.max_length=12 or more'),
])
def test_settings_that_do_not_fit_are_one_clear_error(settings, message):
  with pytest.raises(ZooError, match=message):
    _init(settings)


def _text_folder(root):
  """Reviews whose class shows in their words, some longer than --max_length."""
  words = {'neg': 'awful boring dull bad', 'pos': 'wonderful great superb good'}
  for split, per_class in (('train', 18), ('test', 6)):
    for name, vocabulary in words.items():
      (root / split / name).mkdir(parents=True)
      for i in range(per_class):
        text = ' '.join(vocabulary.split()[:1 + i % 4] * (1 + i % 5)) + ' the film'
        (root / split / name / f'{i}.txt').write_text(text, encoding='utf-8')
  return root


def _config(folder) -> Config:
  return Config(text_folder=str(folder), model='transformer', vocab_size=30, max_length=10, epochs=2, batch_size=6,
                eval_batch_size=8, optimizer='adamw', learning_rate=0.003, schedule='warmup_cosine',
                warmup_epochs=0.5, checkpoint_every_steps=2, keep_checkpoints=20, tensorboard=False,
                split_cache='', model_settings={**TINY, 'depth': 1, 'dropout': 0.1})


def test_trains_and_resumes_bit_identical(tmp_path, caplog):
  """Two epochs of 6 steps on a folder of texts (dropout on); a copy of the run "killed" after step
  8 resumes to the same history and the same arrays."""
  from zoo.training import loop
  folder = _text_folder(tmp_path / 'texts')
  workdir = tmp_path / 'w'
  history = loop.train_and_evaluate(_config(folder), workdir)
  assert [h['step'] for h in history] == [6, 12] and all(np.isfinite(h['train_loss']) for h in history)
  assert_resumes_exactly(_config(folder), workdir, tmp_path / 'resumed', history, caplog, step=8, steps_per_epoch=6)
