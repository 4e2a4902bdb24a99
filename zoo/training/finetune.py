"""Starting a run from a trained workdir (`--init_from`): which parameters carry over, which are new.

Every parameter and BatchNorm statistic of the source checkpoint is copied where the new model has
the same path and shape. The classifier head (`models.head_scope`) may differ in width, for data
with another number of classes: it is then left as initialised. Any other difference means the
architectures or input shapes do not fit, and the first such parameter is named.
"""
import logging

import jax
import numpy as np

from zoo import checkpoints
from zoo.errors import ZooError
from zoo.training import steps

log = logging.getLogger('zoo')


def _flat(tree) -> dict:
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _unflat_like(template, values: dict):
  paths = list(_flat(template))
  return jax.tree.unflatten(jax.tree.structure(template), [values[p] for p in paths])


def start_from(program, state: steps.TrainState, source) -> steps.TrainState:
  """`state` (freshly initialised) with the parameters and statistics of `source`'s latest
  checkpoint copied in, a fresh optimizer state and lookahead average; logs what was copied."""
  step, tree = checkpoints.restore_arrays(source)
  head = program.head + '/'
  copied, new = [], []
  merged = {}
  for collection in ('params', 'batch_stats'):
    target = _flat(jax.device_get(getattr(state, collection)))
    given = _flat(tree.get(collection, {}))
    values = {}
    for path, leaf in target.items():
      source_leaf = given.get(path)
      fits = source_leaf is not None and np.shape(source_leaf) == np.shape(leaf)
      if fits:
        values[path] = np.asarray(source_leaf, np.asarray(leaf).dtype)
        copied.append(f'{collection}/{path}')
      elif path.startswith(head):
        values[path] = np.asarray(leaf)
        new.append(f'{collection}/{path}')
      else:
        found = 'missing' if source_leaf is None else f'shape {list(np.shape(source_leaf))}'
        raise ZooError(f'--init_from={source} does not fit this model: {collection}/{path} is '
                       f'{list(np.shape(leaf))} here, {found} there; fine-tune the same --model on inputs '
                       'of the same shape (and --image_size), or drop --init_from')
    merged[collection] = _unflat_like(getattr(state, collection), values) if values else getattr(state, collection)
  log.info('--init_from=%s (step %d): copied %d arrays; new: %s', source, step, len(copied),
           ', '.join(new) if new else 'none')
  log.info('copied: %s', ', '.join(copied))
  replicate = lambda tree: jax.tree.map(lambda x: steps.put_global(np.asarray(x), steps.replicated(program.mesh)), tree)
  params, batch_stats = replicate(merged['params']), replicate(merged['batch_stats'])
  state = state.replace(params=params, batch_stats=batch_stats,
                        opt_state=replicate(program.optimizer.init(jax.device_get(params))))
  if state.lookahead is not None:
    state = state.replace(lookahead=replicate({'params': merged['params'], 'batch_stats': merged['batch_stats']}))
  return state
