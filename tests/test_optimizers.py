import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.errors import ZooError
from zoo.models import batchnorm_scopes
from zoo.config import Config
from zoo.training.optimizers import create_optimizer, create_schedule, treatments_for


@pytest.mark.parametrize('schedule', ['constant', 'cosine', 'warmup_cosine', 'onecycle', 'triangular', 'linear'])
def test_schedules_peak_at_the_learning_rate_and_stay_positive(schedule):
  fn = create_schedule(Config(schedule=schedule, learning_rate=0.1, epochs=4, warmup_epochs=1), 10)
  values = np.array([fn(s) for s in range(41)])
  assert values.max() == pytest.approx(0.1, rel=1e-3)
  assert (values >= 0).all()
  if schedule != 'constant':
    assert values[-1] < 0.01


@pytest.mark.parametrize('optimizer', ['adam', 'adamw', 'sgd'])
def test_optimizers_step_downhill_and_decay_only_kernels(optimizer):
  params = {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))}
  tx = create_optimizer(Config(optimizer=optimizer, learning_rate=0.1, weight_decay=0.5, nesterov=True), 10,
                        treatments_for(params))
  zero_grads = {'kernel': jnp.zeros((2, 2)), 'bias': jnp.zeros((2,))}
  updates, _ = tx.update(zero_grads, tx.init(params), params)
  assert (updates['kernel'] < 0).all()          # decay pulls kernels toward zero
  np.testing.assert_array_equal(updates['bias'], 0)  # biases are not decayed


def test_triangular_schedule_is_airbenchs():
  fn = create_schedule(Config(schedule='triangular', learning_rate=1.0, epochs=10, warmup_epochs=2), 10)
  assert [float(fn(s)) for s in (0, 10, 20, 60, 100)] == pytest.approx([0.2, 0.6, 1.0, 0.535, 0.07])


def test_linear_schedule_is_airbench94_muons_and_its_own_schedule_decays_to_zero_at_its_stop():
  """lr x (1 - step / total); the whitening bias, on a schedule of 0.3 epochs of 10 steps, decays over
  its own 3 steps (airbench94_muon: bias_lr x (1 - step / whiten_bias_train_steps)), then stops."""
  config = Config(optimizer='sgd', schedule='linear', learning_rate=1.0, momentum=0.0, epochs=2)
  fn = create_schedule(config, 10)
  assert [float(fn(s)) for s in (0, 5, 10, 19, 20)] == pytest.approx([1.0, 0.75, 0.5, 0.05, 0.0])
  warm = create_schedule(dataclasses.replace(config, warmup_epochs=0.5), 10)
  assert [float(warm(s)) for s in (0, 5, 10, 20)] == pytest.approx([0.0, 1.0, 2 / 3, 0.0])
  params, grads = {'whiten': {'bias': jnp.zeros(2)}}, {'whiten': {'bias': jnp.ones(2)}}
  tx = create_optimizer(config, 10, treatments_for(params, ['whiten/bias:schedule_epochs=0.3']))
  state, moves = tx.init(params), []
  for _ in range(6):
    updates, state = tx.update(grads, state, params)
    moves.append(float(updates['whiten']['bias'][0]))
  assert moves == pytest.approx([-1.0, -2 / 3, -1 / 3, 0.0, 0.0, 0.0])


def _tree(kernel, bias, offset, whiten):
  return {'conv': {'kernel': jnp.full((2, 2), kernel), 'bias': jnp.full((2,), bias)},
          'BatchNorm_0': {'bias': jnp.full((2,), offset)},
          'whiten': {'kernel': jnp.full((2, 2), whiten), 'bias': jnp.full((2,), whiten)}}


def test_batchnorm_offsets_get_the_multiplier_before_decay_and_frozen_parameters_stop():
  params, grads = _tree(1.0, 1.0, 1.0, 1.0), _tree(2.0, 2.0, 2.0, 2.0)
  config = Config(optimizer='sgd', learning_rate=0.1, momentum=0.0, weight_decay=0.5)
  rules = ['.*:decay=1', '{batchnorm}/bias:lr=64', 'whiten/kernel:frozen', 'whiten/bias:stop_after_epochs=0.2']
  tx = create_optimizer(config, 10, treatments_for(params, rules, {'batchnorm': ['BatchNorm_0']}))
  opt_state = tx.init(params)
  for step in range(3):
    updates, opt_state = tx.update(grads, opt_state, params)
    # airbench94: lr x (grad + wd x param), and for BatchNorm offsets lr x (64 grad + wd x param).
    np.testing.assert_allclose(updates['conv']['kernel'], -0.1 * (2 + 0.5))
    np.testing.assert_allclose(updates['conv']['bias'], -0.1 * (2 + 0.5))  # '.*:decay=1': decayed
    np.testing.assert_allclose(updates['BatchNorm_0']['bias'], -0.1 * (64 * 2 + 0.5))
    np.testing.assert_array_equal(updates['whiten']['kernel'], 0)
    # 0.2 epochs of 10 steps: the whitening bias moves for 2 updates, then never again.
    np.testing.assert_allclose(updates['whiten']['bias'], -0.1 * (2 + 0.5) if step < 2 else 0.0)


def test_by_default_biases_and_batchnorm_offsets_are_not_decayed():
  params, grads = _tree(1.0, 1.0, 1.0, 1.0), _tree(0.0, 0.0, 0.0, 0.0)
  tx = create_optimizer(Config(optimizer='sgd', learning_rate=0.1, momentum=0.0, weight_decay=0.5), 10,
                        treatments_for(params))
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates['conv']['kernel'], -0.05)
  np.testing.assert_array_equal(updates['conv']['bias'], 0)
  np.testing.assert_array_equal(updates['BatchNorm_0']['bias'], 0)


def test_unknown_optimizer_and_schedule_are_clear_errors():
  params = {'kernel': jnp.ones((2, 2))}
  with pytest.raises(ZooError, match='unknown --optimizer'):
    create_optimizer(Config(optimizer='lamb'), 10, treatments_for(params))
  with pytest.raises(ZooError, match='unknown --schedule'):
    create_optimizer(Config(schedule='step'), 10, treatments_for(params))


class _NamedNorms(nn.Module):
  """BatchNorm modules under names of their own, and a Dense whose bias is no BatchNorm offset."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.BatchNorm(use_running_average=not train, name='norm')(nn.Dense(4, name='BatchNorm_like')(x))
    return nn.Dense(2)(Block(name='stage')(x, train))


class Block(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    return nn.BatchNorm(use_running_average=not train, use_scale=False, name='post')(x)


def test_the_batchnorm_multiplier_finds_batchnorms_by_what_they_are_not_their_names():
  model = _NamedNorms()
  x = jnp.ones((3, 5))
  scopes = batchnorm_scopes(model, x)
  assert scopes == {'norm', 'stage/post'}
  params = model.init(jax.random.key(0), x)['params']
  config = Config(optimizer='sgd', learning_rate=0.1, momentum=0.0)
  tx = create_optimizer(config, 10, treatments_for(params, ['{batchnorm}/bias:lr=64'], {'batchnorm': scopes}))
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates['norm']['bias'], -0.1 * 64)
  np.testing.assert_allclose(updates['stage']['post']['bias'], -0.1 * 64)
  np.testing.assert_allclose(updates['norm']['scale'], -0.1)  # scales are no offsets
  np.testing.assert_allclose(updates['BatchNorm_like']['bias'], -0.1)  # a name is not a BatchNorm


def test_the_last_matching_rule_sets_each_key_and_a_rule_of_the_run_must_match():
  params = _tree(1.0, 1.0, 1.0, 1.0)
  found = treatments_for(params, ['.*:lr=2,decay=0.5', 'conv/.*:lr=3', 'whiten/.*:frozen', 'whiten/bias:frozen=false'])
  assert (found['conv/kernel'].lr, found['conv/kernel'].decay) == (3.0, 0.5)
  assert (found['conv/bias'].lr, found['conv/bias'].decay) == (3.0, 0.5)  # the run's decay=0.5 after the default 0
  assert found['whiten/kernel'].frozen and not found['whiten/bias'].frozen
  with pytest.raises(ZooError, match=r"--rule='conv2/.\*:lr=2' matches no parameter; the model's parameters are: "
                                     r'BatchNorm_0/bias, conv/bias, conv/kernel, whiten/bias, whiten/kernel$'):
    treatments_for(params, ['conv2/.*:lr=2'], checked=['conv2/.*:lr=2'])


@pytest.mark.parametrize('rule, message', [
    ('conv', r"is not PATTERN:KEY=VALUE; write e.g. --rule='.\*/bias:lr=2'"),
    ('conv:speed=2', r"'speed' is not a rule key; use one of: lr, decay, frozen"),
    ('conv:lr=fast', r'lr=.fast. is not a number, 0 or more; write e.g. lr=2'),
    ('conv:lr', r'lr needs a value; write lr=VALUE'),
    ('conv:frozen=maybe', r'frozen=.maybe. is not true or false'),
    ('conv:optimizer=lion', r"optimizer='lion' is unknown; choose one of: muon, base"),
    ('{neck}/.*:lr=2', r'\{neck\} is unknown; the placeholders are \{head\}, \{batchnorm\}'),
    ('con(v:lr=2', r'is not a regular expression'),
])
def test_a_malformed_rule_is_one_line_naming_the_fix(rule, message):
  with pytest.raises(ZooError, match=message):
    Config(rules=(rule,)).validate(1)
