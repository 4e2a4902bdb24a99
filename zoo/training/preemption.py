"""SIGTERM (a preemption notice) becomes a stop that every process of a run agrees on, at the first
dispatch boundary after the notice.

The loop asks `Preemption.should_stop()` at every dispatch boundary; once it returns True, on every
process at the same boundary, the loop saves that step and returns.

Every process catches SIGTERM with a Python handler that only sets a local flag. One process alone
stops at its next boundary. Several processes (`jax.distributed`) agree at every boundary through
one tiny all-gather of their flags (`multihost_utils.process_allgather`), so a notice to any one of
them stops all of them at the same boundary, the first after the notice: cloud preemptions leave
about 30 s, and a stop that waited for JAX's own preemption sync protocol (the coordination
service's notice, then its choice of a sync point beyond every process's counter) came several
boundaries and many seconds later, or not before the run's end. The all-gather waits for the
devices' queued steps, which the boundary's progress line reads anyway. JAX's own SIGTERM handler
(`jax_enable_preemption_service`) is turned off where the processes join
(`experiments/accelerators.py`), so that a notice before training starts ends the process as it
does a single one, instead of being taken by a handler nobody asks. Orbax's `reached_preemption`,
the same JAX protocol, answers False in zoo checkpoint managers (`zoo.checkpoints`).
"""
import logging
import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger('zoo')


class Preemption:
  """Whether the run should stop for a preemption notice; `requested` stays True once it has."""

  def __init__(self):
    self.requested = False
    self._signalled = False  # this process's own notice, not yet agreed on
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._request)

  def _request(self, signum, frame):
    del signum, frame
    self._signalled = True

  def should_stop(self, step: int, pending=None) -> bool:
    """Call at every dispatch boundary, on every process: True at the boundary where all stop.

    Several processes first wait for `pending` (the dispatch's outputs), which the all-gather would
    wait for anyway: a notice that comes while the devices finish the dispatch then stops the run
    at this boundary instead of the next."""
    if not self.requested:
      several = jax.process_count() > 1
      if several and pending is not None:
        jax.block_until_ready(pending)
      if self._signalled:
        log.warning('SIGTERM seen at the boundary of step %d', step)
      if several:
        self.requested = bool(np.any(multihost_utils.process_allgather(np.int32(self._signalled))))
      else:
        self.requested = self._signalled
    return self.requested

  def restore(self) -> None:
    """Puts back the SIGTERM handler that was there before."""
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
