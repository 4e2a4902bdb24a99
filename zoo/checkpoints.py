"""Orbax checkpoints in `<workdir>/checkpoints`, readable with plain orbax and no zoo code.

A checkpoint is one PyTree: {'step', 'params', 'batch_stats', 'opt_state', 'epoch_metrics'}.
`ocp.CheckpointManager(W / 'checkpoints').restore(step)` returns it as a dict whose `params` (and
`batch_stats`, when the model has BatchNorm) feed `model.apply` directly. The zoo restores onto the
current mesh's shardings, so a checkpoint written on N devices resumes or evaluates on M.
The state is replicated and small (the zoo's models have at most a few million parameters), so
checkpoints hold host copies of it.
"""
from pathlib import Path

import flax
import jax
import orbax.checkpoint as ocp

CHECKPOINT_DIR = 'checkpoints'


def create_manager(workdir, *, keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, read_only=read_only,
      # Saving runs in a background thread while training goes on; `wait` joins it.
      enable_async_checkpointing=not read_only)
  return ocp.CheckpointManager(Path(workdir).absolute() / CHECKPOINT_DIR, options=options)


def _tree(state, epoch_metrics) -> dict:
  tree = {'step': state.step, 'params': state.params, 'opt_state': state.opt_state,
          'epoch_metrics': epoch_metrics}
  if state.batch_stats:
    tree['batch_stats'] = state.batch_stats
  return tree


def save(manager: ocp.CheckpointManager, state, epoch_metrics) -> None:
  """Starts saving (asynchronously) unless this step is already saved."""
  step = int(state.step)
  if step not in manager.all_steps():
    # Host (numpy) copies of the replicated state: the checkpoint records no device topology, so
    # plain orbax restores it anywhere, and the zoo restores it onto any mesh.
    tree = jax.device_get(flax.serialization.to_state_dict(_tree(state, epoch_metrics)))
    manager.save(step, args=ocp.args.StandardSave(tree))


def restore(manager: ocp.CheckpointManager, state, epoch_metrics, step: int | None = None):
  """Restores `step` (default: latest) shaped and sharded like `state` -> (state, epoch_metrics)."""
  step = manager.latest_step() if step is None else step
  template = _tree(state, epoch_metrics)
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, flax.serialization.to_state_dict(template))
  restored = manager.restore(step, args=ocp.args.StandardRestore(target))
  tree = flax.serialization.from_state_dict(template, restored)
  epoch_metrics = tree.pop('epoch_metrics')
  return state.replace(**tree), epoch_metrics
