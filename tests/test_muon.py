"""--optimizer=muon against airbench94_muon.py's torch Muon, and which parameters it moves."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from zoo import models
from zoo.config import Config
from zoo.errors import ZooError
from zoo.models.airbench import AirbenchNet
from zoo.training.optimizers import create_optimizer, orthogonalize, treatments_for


def torch_newtonschulz5(g, steps=3, eps=1e-7):
  """airbench94_muon's `zeropower_via_newtonschulz5`, in NumPy float32 (torch runs it in bfloat16)."""
  a, b, c = (3.4445, -4.7750, 2.0315)
  x = g.astype(np.float32)
  x = x / (np.linalg.norm(x) + eps)
  if g.shape[0] > g.shape[1]:
    x = x.T
  for _ in range(steps):
    gram = x @ x.T
    x = a * x + (b * gram + c * gram @ gram) @ x
  if g.shape[0] > g.shape[1]:
    x = x.T
  return x


def torch_muon_step(p, grad, buf, lr, momentum, nesterov):
  """airbench94_muon's `Muon.step` for one torch filter (out, in, h, w), on copies."""
  buf = momentum * buf + grad
  g = grad + momentum * buf if nesterov else buf
  p = p * (len(p) ** 0.5 / np.linalg.norm(p))  # normalize the weight
  update = torch_newtonschulz5(g.reshape(len(g), -1)).reshape(g.shape)  # whiten the update
  return p - lr * update, buf


@pytest.mark.parametrize('nesterov', [True, False])
def test_muon_steps_as_airbench94_muon_does(nesterov):
  """3 steps on a (3, 3, 6, 8) filter with random gradients, lr 0.24 x (1 - step / 10), against the
  torch step transcribed (torch layout (out, in, h, w); the zoo's is (h, w, in, out))."""
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=(3, 3, 6, 8)).astype(np.float32)
  config = Config(optimizer='muon', muon_learning_rate=0.24, muon_momentum=0.6, nesterov=nesterov,
                  schedule='linear', epochs=1, learning_rate=0.1)
  params = {'conv': {'kernel': jnp.asarray(kernel)}}
  tx = create_optimizer(config, 10, treatments_for(params, ['conv/kernel:optimizer=muon']))
  state = tx.init(params)
  torch_p, torch_buf = kernel.transpose(3, 2, 0, 1), np.zeros((8, 6, 3, 3), np.float32)
  for step in range(3):
    grad = rng.normal(size=kernel.shape).astype(np.float32) * 10.0 ** (step - 3)  # scale-free: any size
    updates, state = tx.update({'conv': {'kernel': jnp.asarray(grad)}}, state, params)
    params = optax.apply_updates(params, updates)
    torch_p, torch_buf = torch_muon_step(torch_p, grad.transpose(3, 2, 0, 1), torch_buf,
                                         0.24 * (1 - step / 10), 0.6, nesterov)
    np.testing.assert_allclose(np.asarray(params['conv']['kernel']).transpose(3, 2, 0, 1), torch_p,
                               rtol=2e-5, atol=2e-6)


def test_orthogonalize_is_airbenchs_newton_schulz_for_tall_and_wide_matrices():
  rng = np.random.default_rng(1)
  for shape in ((5, 12), (12, 5)):
    g = rng.normal(size=shape).astype(np.float32)
    np.testing.assert_allclose(orthogonalize(jnp.asarray(g)), torch_newtonschulz5(g), rtol=1e-5, atol=1e-6)


def test_muon_moves_the_training_filters_and_sgd_the_rest():
  """On the small AirbenchNet: the trainable 4-D filters get Muon (their update does not depend on
  the gradient's scale), the whitening bias, BatchNorm offsets and head get SGD with their rates,
  and the frozen whitening kernel never moves."""
  model, x = AirbenchNet(widths=(16, 32, 32), tta_level=0), jnp.zeros((1, 32, 32, 3))
  params = jax.jit(lambda x: model.init(jax.random.key(0), x)['params'])(x)
  scopes = {'batchnorm': models.batchnorm_scopes(model, x), 'head': [models.head_scope(model, x)]}
  treatments = treatments_for(params, (*AirbenchNet.rules, '{batchnorm}/bias:lr=3', '{head}/.*:lr=0.5'), scopes)
  muon_paths = {path for path, t in treatments.items() if t.optimizer == 'muon' and not t.frozen}
  assert muon_paths == {f'ConvGroup_{i}/Conv_{j}/kernel' for i in range(3) for j in range(2)}
  config = Config(optimizer='muon', learning_rate=0.1, momentum=0.0, muon_learning_rate=0.24, schedule='constant')
  tx = create_optimizer(config, 10, treatments)
  rng = np.random.default_rng(2)
  grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
  update = jax.jit(tx.update)
  small, _ = update(grads, tx.init(params), params)
  large, _ = update(jax.tree.map(lambda g: 1000 * g, grads), tx.init(params), params)
  for i in range(3):
    for j in range(2):
      conv = small[f'ConvGroup_{i}'][f'Conv_{j}']['kernel']
      np.testing.assert_allclose(conv, large[f'ConvGroup_{i}'][f'Conv_{j}']['kernel'], rtol=1e-4, atol=1e-6)
      np.testing.assert_allclose(small[f'ConvGroup_{i}'][f'BatchNorm_{j}']['bias'],
                                 -0.1 * 3 * grads[f'ConvGroup_{i}'][f'BatchNorm_{j}']['bias'], rtol=1e-6)
      # Momentum 0, no Nesterov: the step is the gradient orthogonalised, from the renormalised filter.
      p, g = (np.asarray(t[f'ConvGroup_{i}'][f'Conv_{j}']['kernel']).transpose(3, 2, 0, 1) for t in (params, grads))
      torch_p, _ = torch_muon_step(p, g, np.zeros_like(g), 0.24, 0.0, False)
      np.testing.assert_allclose(p + np.asarray(conv).transpose(3, 2, 0, 1), torch_p, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(small['Dense_0']['kernel'], -0.1 * 0.5 * grads['Dense_0']['kernel'], rtol=1e-6)
  np.testing.assert_allclose(small['whiten']['bias'], -0.1 * grads['whiten']['bias'], rtol=1e-6)
  np.testing.assert_array_equal(small['whiten']['kernel'], 0)
  np.testing.assert_array_equal(large['whiten']['kernel'], 0)


def test_muon_settings_out_of_range_are_named():
  for bad in ({'muon_momentum': 1.0}, {'muon_learning_rate': 0.0}):
    with pytest.raises(ZooError, match='--optimizer=muon: .* is out of range; pass a positive rate'):
      Config(optimizer='muon', **bad).validate(1)
  Config(optimizer='sgd', muon_momentum=1.0).validate(1)  # only muon reads them
