"""--accumulate_steps=N: one optimizer step from N micro-batches of --batch_size / N.

Without BatchNorm the step equals the undivided batch's (the mean of N micro-batch means is the
batch's mean) up to float rounding. With BatchNorm it cannot: each micro-batch is normalised with its
own statistics, and the running statistics are updated once per micro-batch, in order; the test
below writes that out as a plain loop and finds the zoo's step equal to it. Across device counts
(micro-batch k is the global rows i with i % N == k): tests/test_training_tools.py."""
import functools
from typing import Optional

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from zoo.config import Config
from zoo.errors import ZooError
from zoo.models import create_model
from zoo.training import steps

BATCH, STEPS = 16, 3


class NormalisedNet(nn.Module):
  """Dense, BatchNorm, ReLU, Dense: the smallest net whose gradient depends on the batch's statistics."""
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    x = nn.Dense(8)(inputs.reshape((inputs.shape[0], -1)))
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, axis_name=self.axis_name)(x)
    return nn.Dense(10)(nn.relu(x))


def _batches():
  rng = np.random.default_rng(0)
  return [{'inputs': rng.random((BATCH, 8, 8, 3), np.float32), 'label': rng.integers(0, 10, BATCH).astype(np.int32),
           'mask': np.ones(BATCH, np.float32)} for _ in range(STEPS)]


def _train(model, accumulate_steps: int, tx=optax.adam(1e-2)):
  """STEPS steps of the zoo's train step on one device: (state, metric sums)."""
  mesh = steps.data_mesh()
  state = steps.create_train_state(model, tx, np.zeros((1, 8, 8, 3), np.float32), jax.random.key(0), mesh)
  step = steps.make_train_step(mesh, steps.StepSettings(accumulate_steps=accumulate_steps))
  metrics = steps.zero_metrics(mesh)
  for batch in _batches():
    state, metrics = step(state, metrics, steps.to_global_batch(batch, mesh), jax.random.key(1))
  return jax.device_get(state), jax.device_get(metrics)


def test_without_batchnorm_accumulation_trains_the_undivided_batchs_parameters():
  model = create_model('mlp', num_classes=10, settings={'hidden_sizes': (32,), 'dropout_rate': 0.0})
  whole, whole_metrics = _train(model, 1)
  divided, divided_metrics = _train(model, 4)
  assert whole.step == divided.step == STEPS  # optimizer steps, not micro-batches
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), divided.params, whole.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), divided_metrics, whole_metrics)
  assert divided_metrics['count'] == STEPS * BATCH


def _reference(model, accumulate_steps: int, tx):
  """What accumulation does to a BatchNorm model, as a plain loop: micro-batch k is rows k, k + N, ...;
  each is normalised by its own statistics and updates the running ones in turn; one optimizer
  step on the mean of the N gradients."""
  variables = model.init({'params': jax.random.key(0), 'dropout': jax.random.key(0)}, np.zeros((1, 8, 8, 3)),
                         train=False)
  params, stats = variables['params'], variables['batch_stats']
  opt_state = tx.init(params)

  @jax.jit
  @functools.partial(jax.grad, has_aux=True)
  def gradient(p, stats, rows):  # (gradient, new running statistics)
    logits, updates = model.apply({'params': p, 'batch_stats': stats}, rows['inputs'], train=True,
                                  mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, rows['label']).mean(), updates

  for batch in _batches():
    grads = jax.tree.map(np.zeros_like, params)
    for k in range(accumulate_steps):
      g, updates = gradient(params, stats, {key: value[k::accumulate_steps] for key, value in batch.items()})
      grads, stats = jax.tree.map(np.add, grads, g), updates['batch_stats']
    updates, opt_state = tx.update(jax.tree.map(lambda g: g / accumulate_steps, grads), opt_state, params)
    params = optax.apply_updates(params, updates)
  return params, stats


def test_with_batchnorm_each_micro_batch_is_normalised_by_itself_and_updates_the_statistics_in_turn():
  tx = optax.sgd(0.1, momentum=0.9)
  divided, _ = _train(NormalisedNet(), 4, tx)
  params, stats = _reference(NormalisedNet(), 4, tx)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), divided.params, params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), divided.batch_stats, stats)
  whole, _ = _train(NormalisedNet(), 1, tx)  # so it is not the undivided batch's step
  assert not np.allclose(whole.params['Dense_0']['kernel'], divided.params['Dense_0']['kernel'], rtol=1e-3)


def test_a_batch_that_does_not_split_into_the_micro_batches_is_one_error_line():
  with pytest.raises(ZooError, match=r'--batch_size=16 does not split into --accumulate_steps=3 equal micro-batches '
                                     r'on each of 2 device\(s\); pass a --batch_size that divides by 6, e.g. '
                                     r'--batch_size=12'):
    Config(batch_size=16, accumulate_steps=3).validate(2)
  Config(batch_size=16, accumulate_steps=4).validate(2)
