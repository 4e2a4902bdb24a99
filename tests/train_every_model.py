"""Trains every model of `zoo.models.MODELS` a few SGD steps on small synthetic data with the zoo's
own step functions, on meshes of 1 and 4 devices, and writes each mesh's final variables to an .npz
file. (Two devices: the BatchNorm test in test_devices.py and the two-process tests.)

usage: JAX_NUM_CPU_DEVICES=4 python tests/train_every_model.py OUT_DIR  (writes OUT_DIR/{1,4}.npz)

Run by `tests/test_devices.py`, which compares the files: the same global batches must give the
same model on any number of devices. One process holds the 4 devices and each mesh takes the first
1 or 4 of them (`jax.make_mesh(..., devices=...)`): the sharded step is compiled for that mesh's
device count as it is in a process with that many devices, and the process starts once instead of
twice. The steps run through the device-held feed's loop, which calls the same per-device step
as the tf.data feed (`steps._train_step`; that feed is compared across processes in
`tests/test_multiprocess.py`). Every model trains with SGD but airbench, which trains with its Muon
optimizer (`--optimizer=muon`, whitening kernel frozen), so that Muon's Newton-Schulz step is
compared across device counts too at no extra compilation.
"""
import sys
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from zoo.config import Config
from zoo.models import MODELS, create_model
from zoo.training import steps
from zoo.models.airbench import AirbenchNet
from zoo.training.optimizers import create_optimizer, treatments_for

BATCH = 16  # global batch: divisible by 1 and 4 devices
STEPS = 3
VOCAB, LENGTH = 50, 12

# Small variants where a model is slow to compile on a CPU; the layers are the registry's.
MODEL_KWARGS = {
    'simple_cnn': {'num_classes': 10},
    'resnet20': {'num_classes': 10, 'settings': {'blocks_per_stage': 1, 'widths': (8, 16, 32)}},
    'airbench': {'num_classes': 10, 'settings': {'widths': (16, 32, 32), 'tta_level': 0}},
    'mlp': {'num_classes': 10, 'settings': {'hidden_sizes': (64, 32), 'dropout_rate': 0.3}},
    'lstm': {'num_classes': 1, 'vocab_size': VOCAB, 'settings': {'embed_dim': 8, 'hidden_size': 8}},
    'bilstm': {'num_classes': 1, 'vocab_size': VOCAB, 'settings': {'embed_dim': 8, 'hidden_size': 8}},
    'ngram': {'num_classes': 1, 'vocab_size': VOCAB, 'settings': {'num_buckets': 2 ** 12}},
    'vit': {'num_classes': 10, 'settings': {'width': 16, 'depth': 1, 'num_heads': 2, 'mlp_dim': 32, 'patch_size': 4,
                                            'tokenizer': 'conv', 'pool': 'token', 'dropout': 0.2}},
    'transformer': {'num_classes': 1, 'vocab_size': VOCAB, 'settings': {'embed_dim': 16, 'depth': 1, 'num_heads': 2,
                                                                        'mlp_dim': 32, 'max_length': LENGTH,
                                                                        'dropout': 0.2}},
}


def synthetic_split(name: str, rows: int, rng: np.random.Generator):
  """Raw inputs and labels, and the on-device preprocessing that makes them model-ready."""
  if MODEL_KWARGS[name]['num_classes'] == 1:  # token ids, post-padded to LENGTH
    tokens = rng.integers(2, VOCAB, (rows, LENGTH))
    lengths = rng.integers(1, LENGTH + 1, rows)
    tokens = np.where(np.arange(LENGTH) < lengths[:, None], tokens, 0).astype(np.int32)
    return tokens, rng.integers(0, 2, rows).astype(np.int32), lambda x, noise: x
  images = rng.integers(0, 256, (rows, 32, 32, 3), dtype=np.uint8)
  return images, rng.integers(0, 10, rows).astype(np.int32), lambda x, noise: x.astype(jnp.float32) / 255


DEVICE_COUNTS = (1, 4)


def train(name: str, mesh: jax.sharding.Mesh) -> dict:
  """STEPS steps of `name` on `mesh` through the device-held feed's loop (`steps.make_train_loop`:
  the split replicated, the epoch plan sharded over `data`), in one call; the variables and metric sums."""
  rng = np.random.default_rng(0)
  inputs, labels, preprocess = synthetic_split(name, 2 * STEPS * BATCH, rng)
  model = create_model(name, **MODEL_KWARGS[name])  # settings= and the dataset's dimensions
  tx = optax.sgd(0.05, momentum=0.9)
  if name == 'airbench':
    muon = Config(optimizer='muon', learning_rate=0.05, momentum=0.9, nesterov=True, muon_learning_rate=0.05)
    params = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), preprocess(inputs[:1], None))['params']
    tx = create_optimizer(muon, STEPS, treatments_for(params, AirbenchNet.rules))
  state = steps.create_train_state(model, tx, preprocess(inputs[:1], None), jax.random.key(0), mesh)
  if name == 'ngram':  # its ratios come from the data (as `loop._build` sets them); zero, nothing would train
    params = model.init_from_data(jax.device_get(state.params), preprocess(inputs, None), labels)
    replicate = lambda tree: jax.tree.map(lambda x: steps.put_global(np.asarray(x), steps.replicated(mesh)), tree)
    state = state.replace(params=replicate(params), opt_state=replicate(state.tx.init(params)))
  plan = rng.permutation(len(inputs))[:STEPS * BATCH].reshape(STEPS, BATCH).astype(np.int32)
  noise = np.zeros((STEPS, BATCH, 0), np.float32)
  replicated = steps.replicated(mesh)
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, steps.AXIS))
  state, metrics = steps.make_train_loop(mesh, preprocess)(
      state, steps.zero_metrics(mesh), steps.put_global(inputs, replicated), steps.put_global(labels, replicated),
      steps.put_global(plan, sharded), steps.put_global(noise, sharded), np.int32(0), np.int32(STEPS),
      jax.random.key(1))
  variables = {'params': state.params, 'batch_stats': state.batch_stats, 'metrics': metrics}
  return flax.traverse_util.flatten_dict(jax.device_get(flax.core.unfreeze(variables)), sep='/')


if __name__ == '__main__':
  assert jax.device_count() == max(DEVICE_COUNTS), 'run with JAX_NUM_CPU_DEVICES=4'
  for count in DEVICE_COUNTS:
    mesh = jax.make_mesh((count,), (steps.AXIS,), devices=jax.devices()[:count])
    arrays = {f'{name}/{path}': np.asarray(value) for name in MODELS for path, value in train(name, mesh).items()}
    np.savez(Path(sys.argv[1]) / f'{count}.npz', **arrays)
