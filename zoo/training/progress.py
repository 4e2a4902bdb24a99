"""What a run shows people while it trains, besides its plot (`zoo.report.plot_history`, which the
evaluation report draws too): TensorBoard scalars and the remaining time (the files' names and
places are `zoo.workdir`'s)."""
import itertools
import logging
import os
import socket
import time

from zoo import workdir as workdir_lib


class TensorBoard:
  """Scalars under `<workdir>/tensorboard`, written by process 0 only.

  Written with TensorBoard's own event protos and record writer, which need no TensorFlow
  (flax.metrics.tensorboard and clu write through `tf.summary`: importing TensorFlow for a few
  scalars would slow every run's start, docs/performance.md).
  """

  def __init__(self, workdir, enabled: bool):
    self._writer = None
    if not enabled:
      return
    try:
      from tensorboard.compat.proto import event_pb2, summary_pb2
      from tensorboard.summary.writer.record_writer import RecordWriter
    except ImportError as e:
      logging.getLogger('zoo').warning('No TensorBoard scalars (%s); history.json and the plot are written', e)
      return
    self._event, self._summary = event_pb2.Event, summary_pb2.Summary
    directory = workdir_lib.tensorboard_dir(workdir)
    directory.mkdir(parents=True, exist_ok=True)
    # TensorBoard's file naming; a resumed run adds a file beside the earlier ones (never over one).
    prefix = f'events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}'
    for uid in itertools.count():
      try:
        events = open(directory / f'{prefix}.{uid}.v2', 'xb')
        break
      except FileExistsError:
        continue
    self._writer = RecordWriter(events)
    self._write(self._event(wall_time=time.time(), file_version='brain.Event:2'))

  def _write(self, event) -> None:
    self._writer.write(event.SerializeToString())
    self._writer.flush()

  def scalars(self, step: int, values: dict) -> None:
    if self._writer:
      summary = self._summary(value=[self._summary.Value(tag=name, simple_value=float(value))
                                     for name, value in values.items()])
      self._write(self._event(wall_time=time.time(), step=step, summary=summary))

  def close(self) -> None:
    if self._writer:
      self._writer.close()
      self._writer = None


def format_duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m{seconds:02d}s' if hours else f'{minutes}m{seconds:02d}s'
