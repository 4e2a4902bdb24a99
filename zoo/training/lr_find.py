"""`--mode=lr_find`: fastai's learning-rate range test (`Learner.lr_find`, after Leslie Smith).

From the run's initial state (its initialisation, data-dependent one and `--init_from` included),
train `steps` steps of the run's batches with the rate rising exponentially from `start` to `end`,
`start x (end / start) ** (i / steps)` at step i, recording each batch's loss; stop early when the
smoothed loss (an exponential average, beta 0.98, debiased) passes 4 times its lowest value. The
suggestion is fastai's default, `valley`, on the smoothed losses with the first tenth and the last 5
left out. Nothing is written but the plot: no checkpoint, no config.json, no history.

The rate is the run's `--learning_rate` with `--schedule=constant` scaled at every step: every
parameter group's rate (the rules' `lr` multipliers, Muon's `--muon_learning_rate`) is scaled
alike, and the test reports the rate of `--learning_rate`. The run's optimizer, augmentation,
mixing, accumulation and label smoothing take part as in training; `--lookahead` and
`--ema_decay` do not (they change no training loss).
"""
import dataclasses
import functools
import logging
import math
import tempfile
from pathlib import Path
from typing import Callable

import jax
import numpy as np
import optax

from zoo import models, packed, report
from zoo.config import Config
from zoo.data import open_dataset, pipeline
from zoo.errors import ZooError
from zoo.training import builder, feeds, finetune
from zoo.training import steps as steps_lib
from zoo.training.optimizers import create_optimizer

log = logging.getLogger('zoo')

START, END, STEPS = 1e-7, 10.0, 100  # fastai's defaults
SMOOTHING = 0.98  # fastai's Recorder: the loss's exponential average
DIVERGENCE = 4.0  # stop when the smoothed loss passes this many times its lowest value
SKIP_END = 5  # fastai leaves the last 5 points out of the plot and the suggestion


def rate(step: int, steps: int, start: float, end: float) -> float:
  """fastai's SchedExp: the rate of step `step` of `steps`."""
  return start * (end / start) ** (step / steps)


@dataclasses.dataclass
class Recorder:
  """The rates, raw and smoothed losses so far; `add` says whether to go on."""
  learning_rates: list = dataclasses.field(default_factory=list)
  losses: list = dataclasses.field(default_factory=list)
  smoothed: list = dataclasses.field(default_factory=list)
  diverged: bool = False
  _average: float = 0.0

  def add(self, learning_rate: float, loss: float) -> bool:
    self._average = SMOOTHING * self._average + (1 - SMOOTHING) * loss
    smoothed = self._average / (1 - SMOOTHING ** (len(self.losses) + 1))
    best = min(self.smoothed, default=smoothed)
    self.learning_rates.append(learning_rate)
    self.losses.append(loss)
    self.smoothed.append(smoothed)
    self.diverged = not math.isfinite(smoothed) or smoothed > DIVERGENCE * min(best, smoothed)
    return not self.diverged


def valley(learning_rates, losses) -> int:
  """fastai's `valley` suggestion: the index halfway down (a third, then a sixth) the longest run of
  decreasing losses (the longest decreasing subsequence, found in O(n^2)), where the loss falls
  fastest for longest."""
  n = len(losses)
  longest = [1] * n
  start, end = 0, 0
  for i in range(1, n):
    for j in range(i):
      if losses[i] < losses[j] and longest[i] < longest[j] + 1:
        longest[i] = longest[j] + 1
      if longest[end] < longest[i]:
        end = i
        start = end - longest[end]
  sections = (end - start) / 3
  return start + int(sections) + int(sections / 2)


def suggestion(recorder: Recorder, steps: int) -> float:
  """`valley` on the smoothed losses, the first tenth of the steps and the last SKIP_END left out as
  fastai does (all of them when that leaves fewer than 2)."""
  rates, losses = recorder.learning_rates, recorder.smoothed
  trimmed = slice(steps // 10, len(losses) - SKIP_END)
  if len(losses[trimmed]) >= 2:
    rates, losses = rates[trimmed], losses[trimmed]
  return float(rates[valley(rates, losses)])


@dataclasses.dataclass(frozen=True)
class _RangeTestProgram(builder.Program):
  """The run's Program with its update scaled by `factor(step)`."""
  factor: Callable = None

  @functools.cached_property
  def optimizer(self):
    return optax.chain(create_optimizer(self.config, self.steps_per_epoch, self.treatments),
                       optax.scale_by_schedule(self.factor))


def find(config: Config, data_dir: str | None, plot: Path, steps: int = STEPS, start: float = START,
         end: float = END) -> dict:
  """Runs the range test of `config`'s training and writes its plot to `plot`; returns what the
  command prints: the suggested rate and what was measured."""
  if not 0 < start < end:
    raise ZooError(f'--lr_find_start={start} and --lr_find_end={end} are no rising range; pass 0 < start < end')
  if steps < 2:
    raise ZooError(f'--lr_find_steps={steps} is too few; pass 2 or more (fastai: 100)')
  config = builder.with_all_settings(config)
  if config.init_from:
    config = dataclasses.replace(config, init_from=str(packed.locate(config.init_from)))
  config = dataclasses.replace(config, schedule='constant', lookahead=False, ema_decay=0.0)
  config.validate(jax.device_count())
  with tempfile.TemporaryDirectory(prefix='zoo-lr-find-') as scratch:  # what a dataset or a fine-tune writes
    recorder = _run(config, data_dir, Path(scratch), steps, start, end)
  suggested = suggestion(recorder, steps)
  lowest = int(np.argmin(recorder.smoothed))
  report.plot_lr_find(recorder.learning_rates[:-SKIP_END] or recorder.learning_rates,
                      recorder.smoothed[:-SKIP_END] or recorder.smoothed, suggested, plot,
                      title=f'{config.model} on {config.data_name}')
  return {'suggested_learning_rate': suggested, 'lowest_loss_learning_rate': recorder.learning_rates[lowest],
          'steps': len(recorder.losses), 'diverged': recorder.diverged, 'plot': str(plot)}


def _run(config: Config, data_dir, scratch: Path, steps_count: int, start: float, end: float) -> Recorder:
  source = finetune.read_source(config, scratch)
  dataset = open_dataset(config, data_dir, scratch)
  models.check_input(config.model, dataset.kind, getattr(dataset, 'image_shape', None))
  train_split = dataset.load(config.train_split)
  steps_per_epoch = pipeline.steps_per_epoch(train_split.num_examples, config.batch_size)
  if steps_per_epoch == 0:
    raise ZooError(f'{config.train_split!r} has {train_split.num_examples} examples, fewer than one batch of '
                   f'--batch_size={config.batch_size}; use a smaller batch or a larger split')
  factor = lambda count: rate(count, steps_count, start, end) / config.learning_rate
  program = _RangeTestProgram(config, builder.create_model(config, dataset.model_kwargs()),
                              pipeline.preprocess_for_eval(dataset, train_split.inputs[:1]), steps_per_epoch,
                              steps_lib.data_mesh(), factor)
  from zoo.training import loop  # its data-dependent initialisation
  state = program.init_state(*loop.data_for_init(program.model, dataset, train_split))
  if source:
    state = finetune.start_from(program, state, source, scratch).state
  feed = feeds.create(config, program, dataset, train_split)
  rng, recorder = jax.random.key(config.seed), Recorder()
  log.info('Learning-rate range test of %s on %s: up to %d steps, rate %g -> %g', config.model, config.data_name,
           steps_count, start, end)
  for step in range(steps_count):
    if step % steps_per_epoch == 0:
      feed.start_epoch(step // steps_per_epoch, 0)
    state, metrics = feed.run(state, steps_lib.zero_metrics(program.mesh), rng, 1)
    sums = jax.device_get(metrics)
    if not recorder.add(rate(step, steps_count, start, end), float(sums['loss_sum']) / float(sums['count'])):
      log.info('the smoothed loss passed %g times its lowest at step %d: stopped', DIVERGENCE, step + 1)
      break
  return recorder
