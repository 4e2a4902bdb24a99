"""Orbax checkpoints in `<workdir>/checkpoints`, readable with plain orbax and no zoo code.

A checkpoint is one PyTree: {'step', 'params', 'batch_stats', 'opt_state', 'epoch_metrics'} (and
'lookahead' for runs with --lookahead).
`ocp.CheckpointManager(W / 'checkpoints').restore(step, args=ocp.args.StandardRestore())` returns it
as a dict of NumPy arrays whose `params` (and `batch_stats`, when the model has BatchNorm) feed
`model.apply` directly. The zoo restores onto the
current mesh's shardings, so a checkpoint written on N devices resumes or evaluates on M.
The state is replicated and small (the zoo's models have at most a few million parameters), so
checkpoints hold host copies of it.
"""
from pathlib import Path

import logging

import flax
import jax
import orbax.checkpoint as ocp

from zoo import workdir as workdir_lib
from zoo.errors import ZooError

log = logging.getLogger('zoo')


class _Manager(ocp.CheckpointManager):
  """Orbax's manager, leaving JAX's preemption sync point to the training loop alone."""

  def reached_preemption(self, step: int) -> bool:
    # Orbax would pass the step as the sync manager's call counter, also from its background
    # finalize thread; `zoo.training.preemption` counts dispatch boundaries and must be its only caller.
    del step
    return False


def create_manager(workdir, *, keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
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
  return tree


def save(manager: ocp.CheckpointManager, state, epoch_metrics) -> None:
  """Starts saving (asynchronously) unless this step is already saved."""
  step = int(state.step)
  if step not in manager.all_steps():
    # Host (numpy) copies of the replicated state: the checkpoint records no device topology, so
    # plain orbax restores it anywhere, and the zoo restores it onto any mesh.
    tree = jax.device_get(flax.serialization.to_state_dict(_tree(state, epoch_metrics)))
    manager.save(step, args=ocp.args.StandardSave(tree))


def restore(manager: ocp.CheckpointManager, state, epoch_metrics, step: int | None = None,
            *, set_aside_unreadable: bool = False):
  """Restores `step` (default: the newest readable one) shaped and sharded like `state`.

  A checkpoint that cannot be read (a crash mid-save, a truncated file) is skipped with a warning
  and the next older one is tried. Nothing is deleted: with `set_aside_unreadable` (training) the
  unreadable step directory is renamed to `unreadable-<step>` so that new saves can take its step.
  Returns (state, epoch_metrics).
  """
  template = _tree(state, epoch_metrics)
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, flax.serialization.to_state_dict(template))
  candidates = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
  for candidate in candidates:
    try:
      restored = manager.restore(candidate, args=ocp.args.StandardRestore(target))
    except Exception as e:  # orbax raises many types for damaged files; all mean "unreadable"
      log.warning('checkpoint %s/%d is unreadable (%s: %s); trying an older one',
                  manager.directory, candidate, type(e).__name__, str(e).splitlines()[0][:200] if str(e) else '')
      if set_aside_unreadable and jax.process_index() == 0:
        aside = Path(manager.directory) / f'unreadable-{candidate}'
        (Path(manager.directory) / str(candidate)).rename(aside)
        log.warning('kept it as %s', aside)
      continue
    tree = flax.serialization.from_state_dict(template, restored)
    epoch_metrics = tree.pop('epoch_metrics')
    if candidate != candidates[0]:
      log.warning('restored the older checkpoint %d instead', candidate)
    if set_aside_unreadable:
      manager.reload()
    return state.replace(**tree), epoch_metrics
  raise ZooError(f'no readable checkpoint in {manager.directory} (tried steps {candidates}); '
                 'the files are kept as they are: restore them from a backup or pass a new --workdir')


def restore_arrays(workdir, step: int | None = None) -> tuple[int, dict]:
  """(step, the checkpoint's PyTree as host NumPy arrays), with no template, mesh or optimizer: what
  `zoo.load` uses. Without `step`, the newest readable checkpoint (an unreadable one is skipped with
  a warning and left as it is)."""
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
    except Exception as e:  # orbax raises many types for damaged files; all mean "unreadable"
      reason = f'{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ""}'
      if step is not None:
        raise ZooError(f'checkpoint {step} of {workdir} is unreadable ({reason}); pick another step '
                       f'(saved: {", ".join(map(str, sorted(saved)))})') from e
      log.warning('checkpoint %s/%d is unreadable (%s); trying an older one', manager.directory, candidate, reason)
  raise ZooError(f'no readable checkpoint in {manager.directory} (tried steps {saved}); '
                 'the files are kept as they are: restore them from a backup or train again')
