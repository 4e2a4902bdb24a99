import jax.numpy as jnp
import numpy as np
import pytest

from zoo.errors import ZooError
from zoo.training.config import Config
from zoo.training.optimizers import create_optimizer, create_schedule


@pytest.mark.parametrize('schedule', ['constant', 'cosine', 'warmup_cosine', 'onecycle'])
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


def test_unknown_optimizer_and_schedule_are_clear_errors():
  with pytest.raises(ZooError, match='unknown --optimizer'):
    create_optimizer(Config(optimizer='lamb'), 10)
  with pytest.raises(ZooError, match='unknown --schedule'):
    create_optimizer(Config(schedule='step'), 10)
