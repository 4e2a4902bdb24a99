import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo import models
from zoo.errors import ZooError
from zoo.models import MODELS, create_model
from zoo.models.contract import setting
from zoo.models.cnn import ResNet, SimpleCNN
from zoo.models.mlp import MLP


def count_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def test_simple_cnn_has_the_seeds_shape_and_parameter_count():
  images = jnp.zeros((4, 32, 32, 3))
  variables = SimpleCNN().init(jax.random.key(0), images)
  assert set(variables) == {'params'}
  assert count_params(variables['params']) == 122_570
  assert SimpleCNN().apply(variables, images).shape == (4, 10)


def test_simple_cnn_computes_the_keras_models_logits_from_the_same_weights():
  from lab.keras_reference import seed_cnn
  keras_model = seed_cnn()
  params = SimpleCNN().init(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))['params']
  order = ['Conv_0', 'Conv_1', 'Conv_2', 'Dense_0', 'Dense_1']
  keras_model.set_weights([np.asarray(params[name][part]) for name in order for part in ('kernel', 'bias')])
  images = np.random.default_rng(0).random((8, 32, 32, 3), dtype=np.float32)
  np.testing.assert_allclose(SimpleCNN().apply({'params': params}, images),
                             keras_model(images).numpy(), rtol=1e-4, atol=1e-4)


def test_reshape_max_pool_equals_flax_max_pool_in_value_and_gradient():
  import flax.linen as nn
  from zoo.models.cnn import max_pool_2x2
  for shape in [(2, 30, 30, 4), (2, 13, 13, 4)]:  # the seed CNN's two pools: even and odd sizes
    x = jax.random.normal(jax.random.key(0), shape)
    reference = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
    np.testing.assert_array_equal(max_pool_2x2(x), reference(x))
    cotangent = jax.random.normal(jax.random.key(1), reference(x).shape)
    grad = lambda f: jax.grad(lambda x: jnp.sum(f(x) * cotangent))(x)
    np.testing.assert_allclose(grad(max_pool_2x2), grad(reference), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('padding', ['VALID', 'SAME', ((2, 0), (1, 1))])
@pytest.mark.parametrize('shape, features', [((2, 32, 32, 3), 32), ((2, 15, 15, 32), 64), ((2, 6, 6, 64), 16)])
def test_cpu_convolution_equals_lax_in_value_and_gradient(padding, shape, features):
  from jax import lax
  from zoo.models.cnn import conv_general_dilated
  x = jax.random.normal(jax.random.key(0), shape)
  kernel = jax.random.normal(jax.random.key(1), (3, 3, shape[-1], features)) / 10
  conv = lambda f: lambda x, k: f(x, k, (1, 1), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  ours, reference = conv(conv_general_dilated), conv(lax.conv_general_dilated)
  np.testing.assert_allclose(jax.jit(ours)(x, kernel), reference(x, kernel), rtol=1e-5, atol=1e-5)
  cotangent = jax.random.normal(jax.random.key(2), reference(x, kernel).shape)
  grads = lambda f: jax.jit(jax.grad(lambda x, k: jnp.sum(f(x, k) * cotangent), argnums=(0, 1)))(x, kernel)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), grads(ours), grads(reference))


def test_strided_and_grouped_convolutions_fall_back_to_lax():
  from jax import lax
  from zoo.models.cnn import conv_general_dilated
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 2, 4))
  for kwargs in [dict(window_strides=(2, 2), feature_group_count=1), dict(window_strides=(1, 1), feature_group_count=2)]:
    k = kernel if kwargs['feature_group_count'] == 2 else jnp.concatenate([kernel, kernel], axis=2)
    args = (x, k, kwargs['window_strides'], 'SAME')
    extra = dict(dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=kwargs['feature_group_count'])
    np.testing.assert_allclose(conv_general_dilated(*args, **extra), lax.conv_general_dilated(*args, **extra),
                               rtol=1e-6)


def test_models_are_pure_and_compose_with_jit_vmap_and_grad():
  model = SimpleCNN()
  images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  variables = model.init(jax.random.key(0), images)
  before = jax.tree.map(np.array, variables)
  eager = model.apply(variables, images)
  np.testing.assert_allclose(jax.jit(model.apply)(variables, images), eager, rtol=1e-5, atol=1e-5)
  per_example = jax.vmap(lambda x: model.apply(variables, x[None])[0])(images)
  np.testing.assert_allclose(per_example, eager, rtol=1e-5, atol=1e-5)
  grads = jax.grad(lambda p: model.apply({'params': p}, images).sum())(variables['params'])
  assert jax.tree.structure(grads) == jax.tree.structure(variables['params'])
  jax.tree.map(np.testing.assert_array_equal, before, variables)  # apply mutated nothing


def test_resnet_keeps_batch_statistics_and_uses_them_at_eval():
  model = ResNet(blocks_per_stage=1)
  images = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  variables = jax.jit(model.init)(jax.random.key(0), images)
  assert set(variables) == {'params', 'batch_stats'}
  logits, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))(variables, images)
  assert logits.shape == (4, 10)
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), variables['batch_stats'], updates['batch_stats'])
  assert any(jax.tree.leaves(changed))
  assert jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images).shape == (4, 10)


def test_resnet20_has_its_published_size():
  params = jax.eval_shape(ResNet().init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))['params']
  assert 0.26e6 < count_params(params) < 0.28e6


def test_mlp_dropout_is_active_only_in_training():
  model = MLP(dropout_rate=0.5)
  x = jnp.ones((2, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x))
  a = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(1)})
  b = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(2)})
  assert not np.allclose(a, b)


def test_registry_builds_every_model_and_rejects_unknown_names():
  for name in MODELS:
    if name in ('simple_cnn', 'resnet20', 'mlp'):
      assert create_model(name, num_classes=3).num_classes == 3
  with pytest.raises(ValueError, match='unknown model .*simple_cnn'):
    create_model('vgg', num_classes=10)


def test_airbench_net_has_airbench94s_size_whitens_and_averages_views_at_eval():
  from zoo.models.airbench import AirbenchNet, normalize, whitening_kernel
  images = np.random.default_rng(0).random((16, 32, 32, 3), dtype=np.float32)
  shapes = jax.eval_shape(create_model('airbench', num_classes=10).init, jax.random.key(0), images)
  assert 1.9e6 < count_params(shapes['params']) < 2.0e6  # airbench94: 1.97 M
  # The rest on the net narrowed (the same layers at a sixteenth of the width): seconds, not tens.
  model = create_model('airbench', {'widths': (16, 32, 32)}, num_classes=10)
  variables = jax.jit(model.init)(jax.random.key(0), images)
  assert 'scale' not in variables['params']['ConvGroup_0']['BatchNorm_0']  # frozen unit scales
  params = AirbenchNet.init_from_data(variables['params'], images)
  whitened = jax.lax.conv_general_dilated(normalize(images), params['whiten']['kernel'], (1, 1), 'VALID',
                                          dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  flat = np.asarray(whitened).reshape(-1, 24)[:, :12]
  np.testing.assert_allclose(flat.T @ flat / len(flat), np.eye(12), atol=0.05)  # unit second moments
  np.testing.assert_allclose(params['whiten']['kernel'], whitening_kernel(normalize(images)))
  variables = {'params': params, 'batch_stats': variables['batch_stats']}
  # Compiled once per level (every view has the same shape): eager, each view's ops dispatch anew.
  apply = lambda level: jax.jit(lambda x: model.clone(tta_level=level).apply(variables, x))
  mirror_tta = apply(1)
  logits = mirror_tta(images)
  np.testing.assert_allclose(logits, mirror_tta(images[:, :, ::-1]), rtol=1e-5, atol=1e-6)
  single = apply(0)
  mirrored = lambda x: (single(x) + single(x[:, :, ::-1])) / 2
  np.testing.assert_allclose(logits, mirrored(images), rtol=1e-5, atol=1e-6)
  # Level 2 (the default): half the image's views, a quarter each of its 1-pixel translations.
  padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='reflect')
  expected = mirrored(images) / 2 + (mirrored(padded[:, :32, :32]) + mirrored(padded[:, 2:, 2:])) / 4
  np.testing.assert_allclose(apply(2)(images), expected, rtol=1e-5, atol=1e-6)


def test_airbench_in_bfloat16_keeps_float32_parameters_and_close_logits():
  images = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
  narrow = {'widths': (16, 32, 32)}  # the same layers at a sixteenth of the width
  full = create_model('airbench', narrow, num_classes=10)
  half = create_model('airbench', {**narrow, 'dtype': 'bfloat16'}, num_classes=10)
  variables = jax.jit(full.init)(jax.random.key(0), images)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(jax.eval_shape(half.init, jax.random.key(0), images)))
  reference, logits = jax.jit(full.apply)(variables, images), jax.jit(half.apply)(variables, images)
  assert logits.dtype == jnp.float32
  assert 1e-4 < float(jnp.linalg.norm(logits - reference) / jnp.linalg.norm(reference)) < 3e-2  # bf16, not f32


def test_a_setting_the_model_lacks_or_of_the_wrong_type_names_the_models_settings():
  with pytest.raises(ZooError, match=r'--model.dtype is not a setting of simple_cnn; its settings are: none'):
    create_model('simple_cnn', {'dtype': 'bfloat16'}, num_classes=10)
  with pytest.raises(ZooError, match=r'--model.widths is not a setting of mlp; its settings are: '
                                     r'--model.hidden_sizes, --model.dropout_rate'):
    create_model('mlp', {'widths': (8,)}, num_classes=10)
  with pytest.raises(ZooError, match=r"--model.widths='wide' is not integers separated by commas; pass e.g. "
                                     r'--model.widths=16,32,64'):
    create_model('resnet20', {'widths': 'wide'}, num_classes=10)
  assert create_model('resnet20', {'widths': [8, 16, 32]}, num_classes=10).widths == (8, 16, 32)  # as JSON holds it


class _Fine(nn.Module):
  num_classes: int = 2
  input_kind = 'image'
  width: int = setting(4, 'Hidden width.')

  @nn.compact
  def __call__(self, x, train: bool = False):
    return nn.Dense(self.num_classes)(nn.Dense(self.width)(x.reshape(len(x), -1)))


@pytest.mark.parametrize('change, problem', [
    ({'input_kind': 'audio'}, r"its class attribute input_kind must be one of \('image', 'text'\)"),
    ({'__annotations__': {'width': int}, 'width': 4}, 'field width is not declared with setting'),
    ({'__annotations__': {'width': float}, 'width': setting(4.0, 'w.')}, None),
    ({'__annotations__': {'width': dict}, 'width': setting(None, 'w.')}, r"setting width has type <class 'dict'>; settings are one of int, float"),
    ({'rules': ('Dense_0:speed=2',)}, "a rule does not parse: .*'speed' is not a rule key"),
    ({'rules': 'Dense_0:lr=2'}, 'rules must be a tuple of rule strings'),
    ({'init_from_data': lambda self, p, x, y: p}, 'init_from_data and init_examples go together'),
    ({'min_image_size': 0}, 'min_image_size=0 is not a positive integer'),
])
def test_registering_a_model_that_breaks_the_contract_names_the_broken_part(change, problem):
  broken = type('Broken', (_Fine,), dict(change))
  if problem is None:
    models.register('fine_for_a_test')(broken)
    models.MODELS.pop('fine_for_a_test')
    return
  with pytest.raises(TypeError, match=r"model 'broken' \(Broken\) breaks the model contract "
                                      r'\(zoo/models/contract.py\): ' + problem):
    models.register('broken')(broken)
  assert 'broken' not in models.MODELS


def test_example_dropout_draws_each_rows_mask_from_its_global_index():
  from zoo.models.dropout import ExampleDropout
  x = jnp.ones((8, 3, 5))
  rngs = {'dropout': jax.random.key(3)}
  whole = jax.jit(lambda x: ExampleDropout(0.5, deterministic=False).apply({}, x, rngs=rngs))(x)
  assert 0.3 < float(jnp.mean(whole == 0)) < 0.7 and set(np.unique(whole)) == {0.0, 2.0}
  assert len({tuple(row.ravel()) for row in np.asarray(whole)}) == 8  # every row its own mask
  on_axis = ExampleDropout(0.5, deterministic=False, axis_name='data')
  for devices in (2, 4):  # vmap stands in for shard_map: the same named axis, positions in order
    split = jax.jit(jax.vmap(lambda part: on_axis.apply({}, part, rngs=rngs), axis_name='data'))(
        x.reshape(devices, -1, 3, 5))
    np.testing.assert_array_equal(split.reshape(x.shape), whole)
  np.testing.assert_array_equal(ExampleDropout(0.5).apply({}, x, deterministic=True), x)


def test_batchnorm_with_an_axis_name_normalises_a_split_batch_as_the_whole_batch():
  """Two halves of a batch under a named axis (vmap standing in for shard_map) give the whole
  batch's logits and running statistics; plain `apply` (no axis) normalises the rows it is given."""
  model = ResNet(blocks_per_stage=1, widths=(4, 8, 8))
  images = jax.random.normal(jax.random.key(0), (8, 8, 8, 3)) + jnp.arange(8)[:, None, None, None]
  # (Compiled without LLVM optimisation: eager or optimised, the initialisers take 7-10 s on a CPU.)
  init = jax.jit(model.init).lower(jax.random.key(0), images).compile({'xla_backend_optimization_level': 0})
  variables = init(jax.random.key(0), images)
  train = lambda m, x: m.apply(variables, x, train=True, mutable=['batch_stats'])
  whole_logits, whole_stats = jax.jit(lambda x: train(model, x))(images)
  halves = images.reshape(2, 4, *images.shape[1:])
  for axis_name, alike in (('data', True), (None, False)):
    logits, stats = jax.jit(jax.vmap(lambda x: train(model.clone(axis_name=axis_name), x), axis_name='data'))(halves)
    assert np.allclose(logits.reshape(whole_logits.shape), whole_logits, rtol=1e-4, atol=1e-5) == alike
    same_stats = jax.tree.map(lambda a, b: np.allclose(a[0], b, rtol=1e-4, atol=1e-6) and
                              np.allclose(a[1], b, rtol=1e-4, atol=1e-6), stats, whole_stats)
    assert all(jax.tree.leaves(same_stats)) == alike


@pytest.mark.parametrize('name', sorted(MODELS))
def test_every_model_runs_inside_flax_nnx_with_its_variables(name):
  from train_every_model import MODEL_KWARGS, synthetic_split
  from zoo.inference import to_nnx
  kwargs = dict(MODEL_KWARGS[name])
  model = create_model(name, kwargs.pop('settings', {}), **kwargs)
  inputs, _, preprocess = synthetic_split(name, 4, np.random.default_rng(0))
  x = preprocess(inputs, None)
  variables = model.init(jax.random.key(0), x, train=False)
  variables = jax.tree.map(lambda a: a + 0.01 * jnp.arange(a.size, dtype=a.dtype).reshape(a.shape) / a.size, variables)
  module = to_nnx(model, variables, x)
  np.testing.assert_allclose(module(x, train=False), model.apply(variables, x, train=False), rtol=1e-5, atol=1e-6)
