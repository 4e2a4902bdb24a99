"""SIGTERM (a preemption notice) becomes a stop that every process of a run agrees on.

The loop asks `Preemption.should_stop()` at every dispatch boundary; once it returns True, on every
process at the same boundary, the loop saves that step and returns.

One process alone catches SIGTERM with a Python handler and stops at its next boundary.

Several processes (`jax.distributed`) use JAX's preemption sync manager, which
`jax.distributed.initialize` starts: its C++ handler takes SIGTERM in whichever process receives
it, the coordination service tells every process, and a background protocol picks the sync point,
one more than the highest call counter any process has passed to `reached_preemption_sync_point`;
every process reaches that counter, so all stop at the same boundary. A Python handler installed
over it would see the notice in one process only, which then saves (a collective) while the others
train on: the run hangs. This is the simplest correct choice: it is JAX's own, it costs nothing
until a notice comes, whereas agreeing through a collective at every boundary would make the host
wait for the devices there. Orbax's preemption support is the same call with the training step as
the counter, which cannot work here, hence two conditions:
- the counter must go up by exactly one per call and be the same on every process at the same
  boundary (one that jumps, as steps do between boundaries, could skip the sync point on one
  process only), so it counts boundaries;
- nothing else may call `reached_preemption_sync_point`, since every call sets the counter: zoo
  checkpoint managers answer orbax's own `reached_preemption` with False (`zoo.checkpoints`).
With `jax_enable_preemption_service` turned off, each process answers its own SIGTERM as one
process alone does.
"""
import signal
import threading

import jax
from jax.experimental import multihost_utils


class Preemption:
  """Whether the run should stop for a preemption notice; `requested` stays True once it has."""

  def __init__(self):
    self.requested = False
    self._boundaries = 0
    self._previous = None
    self._synchronised = jax.distributed.is_initialized() and jax.config.jax_enable_preemption_service
    if not self._synchronised and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._request)

  def _request(self, signum, frame):
    del signum, frame
    self.requested = True

  def should_stop(self) -> bool:
    """Call at every dispatch boundary, on every process: True at the boundary where all stop."""
    if self._synchronised:
      self._boundaries += 1
      self.requested = self.requested or multihost_utils.reached_preemption_sync_point(self._boundaries)
    return self.requested

  def restore(self) -> None:
    """Puts back the SIGTERM handler that was there before."""
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
