"""Orbax checkpoints in `<workdir>/checkpoints`, readable with plain orbax and no zoo code.

A checkpoint is one PyTree: {'step', 'params', 'batch_stats', 'opt_state', 'epoch_metrics'} (and
'lookahead' for runs with --lookahead, 'ema' {'params', 'batch_stats'} for runs with --ema_decay: the
model such a run stands for, `model_variables`).
`ocp.CheckpointManager(W / 'checkpoints').restore(step, args=ocp.args.StandardRestore())` returns it
as a dict of NumPy arrays whose `params` (and `batch_stats`, when the model has BatchNorm) feed
`model.apply` directly. The zoo restores onto the
current mesh's shardings, so a checkpoint written on N devices resumes or evaluates on M.
The state is replicated and small (the zoo's models have at most a few million parameters), so
checkpoints hold host copies of it.

A checkpoint that cannot be read is either damaged (a file of its step directory missing, truncated
or garbled: what orbax and TensorStore report then was measured by damaging real checkpoints) or
could not be read this time (no permission, no memory, a network file system's hiccup, an error of
another kind). Only damage lets a run fall back to an older checkpoint, and training then moves the
damaged step aside; anything else stops with one line and changes nothing, so that a passing
problem never sends a run back to an older step.
"""
import json
import os
import re
from pathlib import Path

import logging

import flax
import jax
import orbax.checkpoint as ocp

from zoo import packed
from zoo import workdir as workdir_lib
from zoo.errors import ZooError

log = logging.getLogger('zoo')


class _Manager(ocp.CheckpointManager):
  """Orbax's manager, leaving JAX's preemption sync point to the training loop alone."""

  def reached_preemption(self, step: int) -> bool:
    # Orbax would ask JAX's preemption sync manager, which the zoo turns off: every process stops at
    # the boundary `zoo.training.preemption` agrees on, and saves through this manager there.
    del step
    return False


def create_manager(workdir, *, keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
  """`keep`: how many of the newest checkpoints a save leaves (1 or more: the newest is never deleted)."""
  if keep < 1:
    raise ValueError(f'keep={keep}: a manager that keeps no checkpoint would delete the one it saves')
  options = ocp.CheckpointManagerOptions(
      max_to_keep=None if read_only else keep, save_interval_steps=0 if read_only else 1,
      create=not read_only, read_only=read_only,
      # Saving runs in a background thread while training goes on; `wait` joins it.
      enable_async_checkpointing=not read_only)
  return _Manager(workdir_lib.checkpoint_dir(workdir), options=options)


def _tree(state, epoch_metrics) -> dict:
  tree = {'step': state.step, 'params': state.params, 'opt_state': state.opt_state,
          'epoch_metrics': epoch_metrics}
  if state.batch_stats:
    tree['batch_stats'] = state.batch_stats
  if state.lookahead is not None:  # --lookahead's average, which a resumed run goes on from
    tree['lookahead'] = state.lookahead
  if state.ema is not None:  # --ema_decay's average: what evaluation and zoo.load use
    tree['ema'] = state.ema
  return tree


def model_variables(tree: dict) -> dict:
  """The variables ({'params'}, and 'batch_stats' for BatchNorm models) that stand for the model of a
  checkpoint's PyTree (`restore_arrays`): its exponential moving average when the run kept one
  (--ema_decay), else its weights. A packed model holds these alone."""
  source = tree.get('ema') or tree
  variables = {'params': source['params']}
  if source.get('batch_stats'):
    variables['batch_stats'] = source['batch_stats']
  return variables


def save(manager: ocp.CheckpointManager, state, epoch_metrics) -> None:
  """Starts saving (asynchronously) unless this step is already saved. A full disk (met now or by the
  previous save, which orbax waits for) is one ZooError; orbax deletes old checkpoints only once a
  save has succeeded (measured on a full tmpfs with max_to_keep=1), so the last one stays."""
  step = int(state.step)
  if step not in manager.all_steps():
    # Host (numpy) copies of the replicated state: the checkpoint records no device topology, so
    # plain orbax restores it anywhere, and the zoo restores it onto any mesh.
    tree = jax.device_get(flax.serialization.to_state_dict(_tree(state, epoch_metrics)))
    with workdir_lib.full_disk_as_error(manager.directory):
      manager.save(step, args=ocp.args.StandardSave(tree))


def wait_until_finished(manager: ocp.CheckpointManager) -> None:
  """Waits for the save in progress; a full disk is one ZooError."""
  with workdir_lib.full_disk_as_error(manager.directory):
    manager.wait_until_finished()


# Why a checkpoint could not be read.

# TensorStore's status codes (absl's) that mean the files themselves are wrong, and those that may
# pass or be fixed.
_DAMAGE_CODES = ('NOT_FOUND', 'OUT_OF_RANGE', 'DATA_LOSS', 'FAILED_PRECONDITION', 'INVALID_ARGUMENT')
_PASSING_CODES = ('CANCELLED', 'UNKNOWN', 'DEADLINE_EXCEEDED', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED',
                  'ABORTED', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'UNAUTHENTICATED')
_STATUS = re.compile(r'([A-Z_]+): ')


def _chain(error: BaseException) -> list[BaseException]:
  """The error and every error it was raised from (orbax wraps TensorStore's)."""
  chain = []
  while error is not None and all(error is not seen for seen in chain):
    chain.append(error)
    error = error.__cause__ or error.__context__
  return chain


def _status(error: BaseException) -> str | None:
  """TensorStore's status code (`DATA_LOSS: ...`), or None for other errors. A file that does not
  decode is INVALID_ARGUMENT, which TensorStore leaves out: a ValueError naming a `local file`."""
  match = _STATUS.match(str(error))
  if match and match.group(1) in _DAMAGE_CODES + _PASSING_CODES:
    return match.group(1)
  return 'INVALID_ARGUMENT' if isinstance(error, ValueError) and 'local file "' in str(error) else None


def _says_damaged(error: BaseException) -> bool:
  return (isinstance(error, (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError))
          or _status(error) in _DAMAGE_CODES)


def _says_not_now(error: BaseException) -> bool:
  return (isinstance(error, MemoryError) or _status(error) in _PASSING_CODES
          or (isinstance(error, OSError) and not isinstance(error, FileNotFoundError)))


def _all_files_open(step_dir: Path) -> bool:
  """Whether every directory under `step_dir` lists and every file opens: orbax reports a directory
  it may not list as a missing file."""
  def stop(error):
    raise error
  try:
    for root, _, files in os.walk(step_dir, onerror=stop):
      for name in files:
        with open(os.path.join(root, name), 'rb'):
          pass
  except OSError:
    return False
  return step_dir.is_dir()


def _is_damaged(error: BaseException, step_dir: Path) -> bool:
  """Damage: a file-content error about a step directory whose files are all there to be read."""
  chain = _chain(error)
  if any(_says_not_now(e) for e in chain) or not any(_says_damaged(e) for e in chain):
    return False
  return _all_files_open(step_dir)


def _reason(error: BaseException) -> str:
  message = str(error).splitlines()[0][:200] if str(error) else ''
  return f'{type(error).__name__}: {message}' if message else type(error).__name__


def _check_damaged(manager: ocp.CheckpointManager, step: int, error: Exception) -> None:
  """Returns if `error` says checkpoint `step` is damaged, else raises the ZooError that stops the run."""
  step_dir = Path(manager.directory) / str(step)
  if _is_damaged(error, step_dir):
    return
  reasons = ' <- '.join(dict.fromkeys(_reason(e) for e in _chain(error)))  # the root cause last
  raise ZooError(f'checkpoint {step_dir} could not be read ({reasons}) and does not look damaged, so nothing was '
                 'changed; rerun, and if this persists, fix its cause (permissions, memory, the file system) or, '
                 f'if its files are damaged, move {step_dir.name} out of {step_dir.parent}') from error


def _set_aside(directory: Path, step: int) -> Path:
  """Renames a damaged step directory to `unreadable-<step>` (or `-2`, `-3`, ... if taken), where
  orbax no longer sees it and a new save can take its step. Returns the new path."""
  aside, number = directory / f'unreadable-{step}', 2
  while aside.exists():
    aside, number = directory / f'unreadable-{step}-{number}', number + 1
  try:
    (directory / str(step)).rename(aside)
  except OSError as e:
    raise ZooError(f'checkpoint {directory / str(step)} is damaged and could not be moved aside ({_reason(e)}); '
                   f'move it out of {directory} yourself and rerun') from e
  return aside


def restore(manager: ocp.CheckpointManager, state, epoch_metrics, step: int | None = None,
            *, set_aside_unreadable: bool = False):
  """Restores `step` (default: the newest readable one) shaped and sharded like `state`.

  A damaged checkpoint (a missing, truncated or garbled file) is skipped with a warning and the
  next older one is tried. Nothing is deleted: with `set_aside_unreadable` (training) the damaged
  step directory is renamed to `unreadable-<step>` so that new saves can take its step. A checkpoint
  that could not be read for another reason raises ZooError and changes nothing.
  Returns (state, epoch_metrics).
  """
  template = _tree(state, epoch_metrics)
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, flax.serialization.to_state_dict(template))
  candidates = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
  for candidate in candidates:
    try:
      restored = manager.restore(candidate, args=ocp.args.StandardRestore(target))
    except Exception as e:  # pylint: disable=broad-except  (orbax raises many types: `_check_damaged` sorts them)
      _check_damaged(manager, candidate, e)
      log.warning('checkpoint %s/%d is damaged (%s); trying an older one', manager.directory, candidate, _reason(e))
      if set_aside_unreadable and jax.process_index() == 0:
        log.warning('kept it as %s', _set_aside(Path(manager.directory), candidate))
      continue
    tree = flax.serialization.from_state_dict(template, restored)
    epoch_metrics = tree.pop('epoch_metrics')
    if candidate != candidates[0]:
      log.warning('restored the older checkpoint %d instead', candidate)
    if set_aside_unreadable:
      manager.reload()
    return state.replace(**tree), epoch_metrics
  kept = 'moved aside as unreadable-<step>' if set_aside_unreadable else 'kept as they are'
  raise ZooError(f'every checkpoint in {manager.directory} is damaged (steps {candidates}; the files are {kept}); '
                 'restore them from a backup, or pass a new --workdir')


def restore_arrays(workdir, step: int | None = None) -> tuple[int, dict]:
  """(step, the checkpoint's PyTree as host NumPy arrays), with no template, mesh or optimizer: what
  `zoo.load` uses. Without `step`, the newest readable checkpoint (a damaged one is skipped with a
  warning and left as it is; one that could not be read for another reason raises ZooError).
  A packed model (`zoo.packed`) holds one checkpoint's variables: those, checked."""
  if packed.is_packed(workdir):
    packed_step, tree = packed.read_arrays(workdir)
    if step is not None and step != packed_step:
      raise ZooError(f'{workdir} is a packed model of step {packed_step} alone; drop --checkpoint_step or pass '
                     f'--checkpoint_step={packed_step}')
    return packed_step, tree
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)  # orbax's "Given directory is read only" is what we asked for
  try:
    manager = create_manager(workdir, read_only=True)
  finally:
    absl_logger.setLevel(level)
  saved = sorted(manager.all_steps(), reverse=True)
  if not saved:
    raise ZooError(f'{workdir_lib.checkpoint_dir(workdir)} holds no checkpoint; train first or pass another workdir')
  if step is not None and step not in saved:
    raise ZooError(f'{workdir} has no checkpoint of step {step}; saved steps: {", ".join(map(str, sorted(saved)))}')
  for candidate in [step] if step is not None else saved:
    try:
      return candidate, manager.restore(candidate, args=ocp.args.StandardRestore())
    except Exception as e:  # pylint: disable=broad-except  (orbax raises many types: `_check_damaged` sorts them)
      _check_damaged(manager, candidate, e)
      if step is not None:
        raise ZooError(f'checkpoint {step} of {workdir} is damaged ({_reason(e)}); pick another step '
                       f'(saved: {", ".join(map(str, sorted(saved)))})') from e
      log.warning('checkpoint %s/%d is damaged (%s); trying an older one', manager.directory, candidate, _reason(e))
  raise ZooError(f'every checkpoint in {manager.directory} is damaged (steps {saved}; the files are kept as they '
                 'are); restore them from a backup or train again')
