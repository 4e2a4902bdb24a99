"""The one training loop every experiment runs, and evaluation from a workdir alone.

Data flow: TFDS split (host memory) -> a feed (`feeds.py`: the split held on the devices, or
tf.data batches of this process's rows) -> jitted shard_map steps over the `data` axis ->
replicated state -> orbax checkpoint + history.
"""
import dataclasses
import logging
import math
import signal
import threading
import time
from pathlib import Path

import jax
import numpy as np

from zoo import checkpoints, reporting
from zoo.data import DESCRIPTION_FILE, open_dataset, pipeline
from zoo.errors import ZooError
from zoo.models import batchnorm_scopes, check_input, create_model
from zoo.training import config as config_lib
from zoo.training import feeds, steps
from zoo.training.config import Config
from zoo.training.optimizers import create_optimizer

# The zoo logs through its own logger so that entry points can show it while keeping orbax's
# and TensorFlow's INFO chatter (absl's logger) quiet.
log = logging.getLogger('zoo')


def _is_chief() -> bool:
  return jax.process_index() == 0


class Preemption:
  """Turns SIGTERM (a preemption notice) into a request the loop answers by checkpointing and
  returning, instead of dying mid-step."""

  def __init__(self):
    self.requested = False
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._request)

  def _request(self, signum, frame):
    del signum, frame
    self.requested = True

  def restore(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


def _stop_for_preemption(preemption: Preemption, manager, step: int, history: list[dict]) -> list[dict]:
  manager.wait_until_finished()
  log.warning('SIGTERM: saved step %d in %s; rerun the same command to resume', step, manager.directory)
  preemption.restore()
  return history


def _summarise(sums: dict) -> dict:
  sums = jax.device_get(sums)
  count = max(float(sums['count']), 1.0)
  return {'loss': float(sums['loss_sum']) / count, 'accuracy': float(sums['correct']) / count,
          'num_examples': int(sums['count'])}


def _build(config: Config, dataset, sample_inputs, steps_per_epoch: int, mesh, init_split=None):
  """The model and a freshly initialised, replicated train state (the template restores fill).

  Models with a data-dependent initialisation (`init_from_data`, e.g. airbench's whitening layer,
  the n-gram model's Naive Bayes ratios) get it from the first `init_examples` (None: all) of
  `init_split`, the training split, preprocessed, with their labels; restoring a checkpoint
  overrides it.
  """
  check_input(config.model, dataset.kind, getattr(dataset, 'image_shape', None))
  model = create_model(config.model, config.compute_dtype, config.tta_level, **dataset.model_kwargs())
  sample = pipeline.preprocess_for_eval(dataset, sample_inputs)
  tx = create_optimizer(config, steps_per_epoch, frozen=getattr(model, 'frozen', ()),
                        frozen_after_epochs=getattr(model, 'frozen_after_epochs', ()),
                        batchnorm_scopes=batchnorm_scopes(model, sample))
  state = steps.create_train_state(model, tx, sample, jax.random.key(config.seed), mesh, config.lookahead)
  if init_split is not None and hasattr(model, 'init_from_data'):
    count = getattr(model, 'init_examples', None)
    params = model.init_from_data(jax.device_get(state.params),
                                  pipeline.preprocess_for_eval(dataset, init_split.inputs[:count]),
                                  init_split.labels[:count])
    replicate = lambda tree: jax.tree.map(lambda x: steps.put_global(np.asarray(x), steps.replicated(mesh)), tree)
    state = state.replace(params=replicate(params), opt_state=replicate(tx.init(params)))
    if state.lookahead is not None:
      state = state.replace(lookahead=replicate({'params': params, 'batch_stats': state.batch_stats}))
  return model, state


def _next_multiple(step: int, every: int) -> int:
  """The first multiple of `every` after `step` (no bound when `every` is 0)."""
  return (step // every + 1) * every if every > 0 else 1 << 62


def _check_finite(summary: dict, step: int, manager, state=None) -> None:
  """Stops a diverged run before it can checkpoint non-finite values (the parameters are checked
  too when about to save: they turn inf one step before the loss shows it)."""
  if not math.isfinite(summary['loss']) or (state is not None and not steps.all_finite(state.params)):
    manager.wait_until_finished()
    last = manager.latest_step()
    kept = f'the last good checkpoint is step {last}' if last is not None else 'no checkpoint was written'
    raise ZooError(f'the training loss became NaN/inf by step {step}; stopped without saving ({kept}). '
                   'Lower --learning_rate or add warm-up (--schedule=warmup_cosine --warmup_epochs=1) '
                   'and use a new --workdir')


def train_and_evaluate(config: Config, workdir, data_dir: str | None = None) -> list[dict]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the history."""
  workdir = Path(workdir)
  mesh = steps.data_mesh()
  config.validate(jax.device_count())
  config_lib.check_resumable(config, workdir)  # before anything is written into the workdir
  dataset = open_dataset(config, data_dir, workdir)
  train_split, eval_split = dataset.load(config.train_split), dataset.load(config.eval_split)
  steps_per_epoch = pipeline.steps_per_epoch(train_split.num_examples, config.batch_size)
  if steps_per_epoch == 0:
    raise ZooError(f'{config.train_split!r} has {train_split.num_examples} examples, fewer than one '
                   f'batch of --batch_size={config.batch_size}; use a smaller batch or a larger split')
  total_steps = config.epochs * steps_per_epoch
  _, state = _build(config, dataset, train_split.inputs[:1], steps_per_epoch, mesh,
                    init_split=train_split)
  if _is_chief():  # Only once every name and split has proven valid: a typo must not be recorded.
    config_lib.record(config, workdir)
    if not (workdir / DESCRIPTION_FILE).exists():  # class names and input format, for `zoo.load`
      reporting.write_json(workdir / DESCRIPTION_FILE, dataset.describe())
  metrics = steps.zero_metrics(mesh)
  manager = checkpoints.create_manager(workdir, keep=config.keep_checkpoints)
  if manager.latest_step() is not None:
    state, metrics = checkpoints.restore(manager, state, metrics, set_aside_unreadable=True)
    log.info('Resuming from step %d in %s', int(state.step), manager.directory)
  step = int(state.step)
  history = [h for h in reporting.read_history(workdir) if h['epoch'] <= step // steps_per_epoch]
  rng = jax.random.key(config.seed)
  feed = feeds.create(config, dataset, train_split, mesh)
  evaluate_split = feeds.create_eval(config, dataset, eval_split, mesh)
  tensorboard = reporting.TensorBoard(workdir, enabled=_is_chief() and config.tensorboard)
  log.info('Training %s on %s: %d epochs x %d steps of %d examples over %d device(s) in %d process(es); '
           'input pipeline: %s', config.model, config.data_name, config.epochs, steps_per_epoch,
           config.batch_size, jax.device_count(), jax.process_count(), type(feed).__name__)

  preemption = Preemption()
  flops_logged = False
  for epoch in range(step // steps_per_epoch, config.epochs):
    first_step = step - epoch * steps_per_epoch
    epoch_start = time.perf_counter()
    feed.start_epoch(epoch, first_step)
    epoch_end = (epoch + 1) * steps_per_epoch
    while step < epoch_end:
      # A call ends where the loop must look: a log line, a checkpoint, the epoch's end.
      stop = min(epoch_end, step + feed.max_steps_per_call, _next_multiple(step, config.log_every_steps),
                 _next_multiple(step, config.checkpoint_every_steps))
      state, metrics = feed.run(state, metrics, rng, stop - step)
      if not flops_logged:
        flops_logged = True
        if feed.flops_per_step:
          log.info('train step: %.1f MFLOP per step (XLA cost analysis)', feed.flops_per_step / 1e6)
        else:  # GPU plugins: seen on an H200 with JAX 0.11.2; the same step's count on CPU holds
          log.info('train step: XLA gives no FLOP count on %s; FLOP figures are left out', jax.default_backend())
      step = stop
      if preemption.requested and step % steps_per_epoch:  # at an epoch's end: finish the epoch first
        _check_finite(_summarise(metrics), step, manager, state)
        checkpoints.save(manager, state, metrics)
        return _stop_for_preemption(preemption, manager, step, history)
      if step % config.log_every_steps == 0:
        summary = _summarise(metrics)
        _check_finite(summary, step, manager)
        elapsed = time.perf_counter() - epoch_start
        done = step - epoch * steps_per_epoch - first_step
        rate = done * config.batch_size / elapsed
        log.info('epoch %d/%d step %d/%d: loss %.4f accuracy %.4f, %.0f examples/s, %.1f GFLOP/s, ETA %s',
                 epoch + 1, config.epochs, step, total_steps, summary['loss'], summary['accuracy'],
                 rate, feed.flops_per_step * done / elapsed / 1e9,
                 reporting.format_duration((total_steps - step) * config.batch_size / rate))
      if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0 and step % steps_per_epoch:
        # (An epoch's last step is saved after its evaluation and history entry, below.)
        _check_finite(_summarise(metrics), step, manager, state)
        checkpoints.save(manager, state, metrics)
    train = _summarise(metrics)
    _check_finite(train, step, manager, state)
    train_seconds = time.perf_counter() - epoch_start
    metrics = steps.zero_metrics(mesh)
    entry = {'epoch': epoch + 1, 'step': step, 'train_loss': train['loss'], 'train_accuracy': train['accuracy']}
    if (epoch + 1) % config.eval_every_epochs == 0 or epoch + 1 == config.epochs:
      evaluation = _summarise(evaluate_split(state))
      entry.update(eval_loss=evaluation['loss'], eval_accuracy=evaluation['accuracy'],
                   eval_examples=evaluation['num_examples'])
    entry.update({
             'seconds': round(time.perf_counter() - epoch_start, 3),
             'train_images_per_second': round((steps_per_epoch - first_step) * config.batch_size / train_seconds, 1)})
    if feed.flops_per_step:
      entry.update({
          'flops_per_step': feed.flops_per_step,
          'train_gflops_per_second': round(feed.flops_per_step * (steps_per_epoch - first_step) / train_seconds / 1e9, 2),
          'train_pflop': feed.flops_per_step * step / 1e15})  # training compute so far (XLA's count)
    history.append(entry)
    log.info('epoch %d/%d: %s', epoch + 1, config.epochs, entry)
    if _is_chief():
      reporting.write_json(workdir / reporting.HISTORY_FILE, history)
      reporting.plot_history(history, workdir / reporting.PLOT_FILE)
      tensorboard.scalars(step, {f'{k}': v for k, v in entry.items() if k not in ('epoch', 'step')})
    # After the history: a kill in between leaves an entry that the resumed run drops and redoes,
    # never a checkpoint whose epoch has no entry.
    checkpoints.save(manager, state, metrics)
    if preemption.requested:
      return _stop_for_preemption(preemption, manager, step, history)
  manager.wait_until_finished()
  tensorboard.close()
  preemption.restore()
  return history


def _open_trained(workdir: Path, data_dir):
  """The recorded config, a read-only checkpoint manager, the dataset and the mesh of a workdir."""
  config = config_lib.read_recorded(workdir)
  if config is None:
    raise ZooError(f'{workdir} has no {config_lib.CONFIG_FILE}: it is not a zoo workdir; '
                   'pass the --workdir of a training run')
  mesh = steps.data_mesh()
  config.validate(jax.device_count())
  manager = checkpoints.create_manager(workdir, read_only=True)
  if manager.latest_step() is None:
    raise ZooError(f'{workdir} has no checkpoint yet; train first (--mode=train) or pass another --workdir')
  return config, manager, open_dataset(config, data_dir, workdir), mesh


def evaluate(workdir, data_dir: str | None = None, split: str | None = None, step: int | None = None,
             **overrides) -> dict:
  """Evaluates a checkpoint of `workdir` with the config recorded there, but for `overrides` of
  fields that change only the evaluation (`eval_batch_size`, `tta_level`, recorded in eval.json) or
  only its speed (`Config.RUNTIME_FIELDS`); writes eval.json."""
  workdir = Path(workdir)
  config, manager, dataset, mesh = _open_trained(workdir, data_dir)
  config = dataclasses.replace(config, **overrides)
  config.validate(jax.device_count())
  split = split or config.eval_split
  eval_split = dataset.load(split)
  _, state = _build(config, dataset, eval_split.inputs[:1], 1, mesh)
  state, _ = checkpoints.restore(manager, state, steps.zero_metrics(mesh), step)
  result = _summarise(feeds.create_eval(config, dataset, eval_split, mesh)(state))
  report = {'split': split, 'step': int(state.step), 'num_examples': result['num_examples'],
            'accuracy': result['accuracy'], 'loss': result['loss'],
            'dataset': config.data_name, 'model': config.model,
            **{k: v for k, v in overrides.items() if k not in Config.RUNTIME_FIELDS}}
  if _is_chief():
    reporting.write_json(workdir / reporting.EVAL_FILE, report)
  return report
