import jax.numpy as jnp
import numpy as np
import pytest

from zoo.errors import ZooError
from zoo.training.config import Config
from zoo.training.optimizers import create_optimizer, create_schedule


@pytest.mark.parametrize('schedule', ['constant', 'cosine', 'warmup_cosine', 'onecycle', 'triangular'])
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
  tx = create_optimizer(Config(optimizer=optimizer, learning_rate=0.1, weight_decay=0.5, nesterov=True), 10)
  zero_grads = {'kernel': jnp.zeros((2, 2)), 'bias': jnp.zeros((2,))}
  updates, _ = tx.update(zero_grads, tx.init(params), params)
  assert (updates['kernel'] < 0).all()          # decay pulls kernels toward zero
  np.testing.assert_array_equal(updates['bias'], 0)  # biases are not decayed


def test_triangular_schedule_is_airbenchs():
  fn = create_schedule(Config(schedule='triangular', learning_rate=1.0, epochs=10, warmup_epochs=2), 10)
  assert [float(fn(s)) for s in (0, 10, 20, 60, 100)] == pytest.approx([0.2, 0.6, 1.0, 0.5, 0.0])


def test_bias_multiplier_scales_only_biases_and_frozen_parameters_never_move():
  params = {'conv': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))}, 'whiten': {'kernel': jnp.ones((2, 2))}}
  grads = {'conv': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))}, 'whiten': {'kernel': jnp.ones((2, 2))}}
  config = Config(optimizer='sgd', learning_rate=0.1, weight_decay=0.5, bias_lr_multiplier=64)
  tx = create_optimizer(config, 10, frozen=('whiten/kernel',))
  updates, _ = tx.update(grads, tx.init(params), params)
  plain = create_optimizer(Config(optimizer='sgd', learning_rate=0.1, weight_decay=0.5), 10)
  reference, _ = plain.update(grads, plain.init(params), params)
  np.testing.assert_allclose(updates['conv']['kernel'], reference['conv']['kernel'])
  np.testing.assert_allclose(updates['conv']['bias'], 64 * reference['conv']['bias'])
  np.testing.assert_array_equal(updates['whiten']['kernel'], 0)


def test_unknown_optimizer_and_schedule_are_clear_errors():
  with pytest.raises(ZooError, match='unknown --optimizer'):
    create_optimizer(Config(optimizer='lamb'), 10)
  with pytest.raises(ZooError, match='unknown --schedule'):
    create_optimizer(Config(schedule='step'), 10)
