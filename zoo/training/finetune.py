"""Starting a run from a trained workdir (`--init_from`): which arrays carry over, which are new, and
what the new workdir keeps so that it never needs the source again.

Every parameter and BatchNorm statistic of the source's latest checkpoint is copied where the new
model has the same path and shape. The classifier head (`models.head_scope`) may differ in width, for
data with another number of classes: it is then left as initialised. Any other difference means the
architectures or input shapes do not fit, and the first such array is named in one line. `read_source`
and `start_from` only read and compute: the loop writes nothing into the new workdir before both
have passed, so a corrected command can use the same workdir.

Data-dependent initialisation (`init_from_data`: airbench's whitening layer, the n-gram model's Naive
Bayes ratios and bias) runs on the new training split first, as for a fresh start; each copied array
then replaces its value. The source's trained arrays win: the new split's initialisation survives
only in what is new (a head of another width). The n-gram model has no dense head (all its arrays
are per class), so it fine-tunes on data with as many classes, from the source's trained ratios,
weights and bias, which training then moves towards the new data.

Text: the run reads its texts with the source's vocabulary and tokenizer rules (`zoo.data.text`,
`tokenizer_from`) and its --vocab_size and --max_length (checked here before any data is read), so
each copied embedding row and hashed n-gram bucket still belongs to the word it was trained on.

The new workdir keeps its start as checkpoint 0, so a resume restores its own checkpoint and never
reads the source, and `init_from.json`: the source's path as given (for information), its checkpoint
step and the sha256 of the copied arrays. A run restarted before checkpoint 0 was saved reads a
source again and checks that it is the recorded one.
"""
import dataclasses
import hashlib
import logging
from typing import Optional

import jax
import numpy as np

from zoo import checkpoints
from zoo import workdir as workdir_lib
from zoo.config import Config
from zoo.errors import ZooError
from zoo.training import steps

log = logging.getLogger('zoo')

COLLECTIONS = ('params', 'batch_stats')


@dataclasses.dataclass(frozen=True)
class Source:
  """The latest checkpoint of the workdir `path`: its `step` and {collection: {path: array}}."""
  path: str
  step: int
  arrays: dict


@dataclasses.dataclass(frozen=True)
class Start:
  """A fine-tuning run's first state, and what `init_from.json` records of it."""
  state: steps.TrainState
  record: dict


def _flat(tree) -> dict:
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _unflat_like(template, values: dict):
  paths = list(_flat(template))
  return jax.tree.unflatten(jax.tree.structure(template), [values[p] for p in paths])


def has_checkpoint(workdir) -> bool:
  """Whether `workdir` holds a checkpoint (a fine-tune saves its start as checkpoint 0)."""
  return (workdir_lib.checkpoint_dir(workdir).is_dir()
          and checkpoints.create_manager(workdir, read_only=True).latest_step() is not None)


def read_source(config: Config, workdir) -> Optional[Source]:
  """The source of a fine-tuning run's first start, read once; None for a run from scratch and for
  a resume (`workdir` holds a checkpoint: it restores that, whatever --init_from says now)."""
  recorded = workdir_lib.read_config(workdir)
  if not (config.init_from or (recorded is not None and recorded.init_from)) or has_checkpoint(workdir):
    return None
  if not config.init_from:  # a fine-tune that saved no start yet (stopped before its checkpoint 0)
    raise ZooError(f'{workdir} was started from --init_from={recorded.init_from} and holds no checkpoint yet; '
                   f'pass --init_from={recorded.init_from} (or where that workdir is now) to start it again, '
                   'or pass a new --workdir')
  source_config = workdir_lib.trained_config(config.init_from)  # a fine-tuning source must be a trained workdir
  _check_text_inputs(config, source_config, workdir_lib.read_description(config.init_from))
  step, tree = checkpoints.restore_arrays(config.init_from)
  variables = checkpoints.model_variables(tree)  # the source's moving average, if it kept one
  return Source(config.init_from, step, {c: _flat(variables.get(c, {})) for c in COLLECTIONS})


def _check_text_inputs(config: Config, source_config: Config, description: Optional[dict]) -> None:
  """A text source's ids are its vocabulary's: the run must read texts as it did."""
  if (description or {}).get('inputs', {}).get('kind') != 'text':
    return
  expected = (source_config.vocab_size, source_config.max_length)
  if (config.vocab_size, config.max_length) != expected:
    raise ZooError(f'--init_from={config.init_from} reads texts with --vocab_size={expected[0]} '
                   f'--max_length={expected[1]}, not --vocab_size={config.vocab_size} '
                   f'--max_length={config.max_length}: its word ids would change meaning; pass '
                   f'--vocab_size={expected[0]} --max_length={expected[1]}, or drop --init_from')


def _in_head(program, path: str) -> bool:
  try:
    return path.startswith(program.head + '/')
  except ZooError:  # a model without a dense head (the n-gram model): every array must fit
    return False


def _fingerprint(arrays: dict) -> str:
  """sha256 of the copied arrays: their paths, dtypes, shapes and bytes, in path order."""
  digest = hashlib.sha256()
  for path in sorted(arrays):
    array = np.ascontiguousarray(arrays[path])
    digest.update(f'{path}|{array.dtype.str}|{array.shape}|'.encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def _check_recorded(workdir, source: Source, record: dict) -> None:
  """A run restarted before its checkpoint 0 must start from the source it recorded."""
  recorded = workdir_lib.read_init_from(workdir)
  if recorded is not None and recorded['sha256'] != record['sha256']:
    raise ZooError(f'--init_from={source.path} (step {source.step}) is not the start {workdir} recorded '
                   f'({recorded["path"]}, step {recorded["step"]}, sha256 {recorded["sha256"][:12]}...); pass '
                   'the recorded source as --init_from, or pass a new --workdir')


def start_from(program, state: steps.TrainState, source: Source, workdir) -> Start:
  """`state` (freshly initialised) with the source's arrays copied in, a fresh optimizer state and
  averages (lookahead, EMA); raises ZooError when the source does not fit. Writes nothing."""
  copied, new, merged = {}, [], {}
  for collection in COLLECTIONS:
    target = _flat(jax.device_get(getattr(state, collection)))
    given = source.arrays[collection]
    values = {}
    for path, leaf in target.items():
      source_leaf = given.get(path)
      if source_leaf is not None and np.shape(source_leaf) == np.shape(leaf):
        values[path] = np.asarray(source_leaf, np.asarray(leaf).dtype)
        copied[f'{collection}/{path}'] = source_leaf
      elif _in_head(program, path):
        values[path] = np.asarray(leaf)
        new.append(f'{collection}/{path}')
      else:
        found = 'missing' if source_leaf is None else f'shape {list(np.shape(source_leaf))}'
        raise ZooError(f'--init_from={source.path} does not fit this model: {collection}/{path} is '
                       f'{list(np.shape(leaf))} here, {found} there; fine-tune the same --model on inputs '
                       'of the same shape (and --image_size; as many classes for a model without a dense '
                       'head), or drop --init_from')
    merged[collection] = _unflat_like(getattr(state, collection), values) if values else getattr(state, collection)
  record = {'path': str(source.path), 'step': source.step, 'sha256': _fingerprint(copied),
            'copied': len(copied), 'new': new}
  _check_recorded(workdir, source, record)
  log.info('--init_from=%s (step %d): copied %d arrays; new: %s', source.path, source.step, len(copied),
           ', '.join(new) if new else 'none')
  log.info('copied: %s', ', '.join(copied))
  replicate = lambda tree: jax.tree.map(lambda x: steps.put_global(np.asarray(x), steps.replicated(program.mesh)), tree)
  params, batch_stats = replicate(merged['params']), replicate(merged['batch_stats'])
  state = state.replace(params=params, batch_stats=batch_stats,
                        opt_state=replicate(program.optimizer.init(jax.device_get(params))))
  return Start(steps.averages_restarted(state), record)


def record(workdir, start: Start, dataset) -> None:
  """Writes `init_from.json` and, for text, the source's vocabulary that the run reads with, so that
  the workdir serves evaluation, prediction and resumes without the source (process 0, after the
  start has proven to fit)."""
  workdir_lib.write_init_from(workdir, start.record)
  if dataset.kind == 'text' and workdir_lib.read_vocabulary(workdir) is None:
    workdir_lib.write_vocabulary(workdir, dataset.tokenizer().vocabulary)
