"""The one training loop every experiment runs, and evaluation from a workdir alone.

Data flow: TFDS split (host memory) -> a feed (`feeds.py`: the split held on the devices, or
tf.data batches of this process's rows) -> jitted shard_map steps over the `data` axis ->
replicated state -> orbax checkpoint + history.
"""
import dataclasses
import logging
import math
import time
from pathlib import Path

import jax
import numpy as np

from zoo import checkpoints, models, packed, report
from zoo import workdir as workdir_lib
from zoo.config import Config
from zoo.data import open_dataset, pipeline
from zoo.errors import ZooError
from zoo.training import builder, feeds, finetune, progress, steps
from zoo.training.preemption import Preemption

# The zoo logs through its own logger so that entry points can show it while keeping orbax's
# and TensorFlow's INFO chatter (absl's logger) quiet.
log = logging.getLogger('zoo')


def _is_chief() -> bool:
  return jax.process_index() == 0


def _stop_for_preemption(preemption: Preemption, manager, step: int, history: list[dict]) -> list[dict]:
  checkpoints.wait_until_finished(manager)
  log.warning('SIGTERM: saved step %d in %s; rerun the same command to resume', step, manager.directory)
  preemption.restore()
  return history


def _summarise(sums: dict) -> dict:
  sums = jax.device_get(sums)
  count = max(float(sums['count']), 1.0)
  return {'loss': float(sums['loss_sum']) / count, 'accuracy': float(sums['correct']) / count,
          'num_examples': int(sums['count'])}


def _evaluation(logits: np.ndarray, labels: np.ndarray) -> dict:
  """Loss, accuracy and example count of every example's logits: the one computation behind each
  epoch's eval_loss/eval_accuracy and `--mode=eval`'s loss/accuracy, so the two agree. The loss is
  training's (`steps.classification_sums`) without label smoothing: the model's plain cross-entropy,
  comparable across runs whatever `--label_smoothing` they trained with."""
  return _summarise(steps.classification_sums(logits, labels, np.ones(len(labels), np.float32)))


def _next_multiple(step: int, every: int) -> int:
  """The first multiple of `every` after `step` (no bound when `every` is 0)."""
  return (step // every + 1) * every if every > 0 else 1 << 62


def _save(manager, state, metrics, step: int, loss: float) -> None:
  """Checks that the training `loss` and the parameters are finite, then saves: a diverged run stops
  before it can checkpoint non-finite values (the parameters turn inf a step before the loss shows it)."""
  _check_finite(loss, manager, step, state)
  checkpoints.save(manager, state, metrics)


def _check_finite(loss: float, manager, step: int, state=None) -> None:
  if math.isfinite(loss) and (state is None or steps.all_finite(state.params)):
    return
  checkpoints.wait_until_finished(manager)
  last = manager.latest_step()
  kept = f'the last good checkpoint is step {last}' if last is not None else 'no checkpoint was written'
  raise ZooError(f'the training loss became NaN/inf by step {step}; stopped without saving ({kept}). '
                 'Lower --learning_rate or add warm-up (--schedule=warmup_cosine --warmup_epochs=1) '
                 'and use a new --workdir')


def _open(config: Config, workdir: Path, data_dir):
  """Checks the config, the workdir and the model against the data's description (no data read
  yet), then reads the splits: (dataset, train split, eval split, steps per epoch, fine-tuning source)."""
  config.validate(jax.device_count())
  workdir_lib.check_resumable(config, workdir)  # before anything is written into the workdir
  source = finetune.read_source(config, workdir)  # a fine-tune's first start (None when resuming)
  dataset = open_dataset(config, data_dir, workdir)
  models.check_input(config.model, dataset.kind, getattr(dataset, 'image_shape', None))
  if (config.mixup_alpha or config.cutmix_alpha) and dataset.kind != 'image':
    raise ZooError(f'--mixup_alpha and --cutmix_alpha mix images, and {config.data_name} is {dataset.kind}; '
                   'drop them (set them to 0) for this dataset')
  # The evaluation split first: it is mostly the smaller, so a misspelt name stops the run before the
  # training split is read and decoded (seconds to minutes).
  eval_split = dataset.load(config.eval_split)
  train_split = dataset.load(config.train_split)
  steps_per_epoch = pipeline.steps_per_epoch(train_split.num_examples, config.batch_size)
  if steps_per_epoch == 0:
    raise ZooError(f'{config.train_split!r} has {train_split.num_examples} examples, fewer than one '
                   f'batch of --batch_size={config.batch_size}; use a smaller batch or a larger split')
  return dataset, train_split, eval_split, steps_per_epoch, source


def data_for_init(model, dataset, train_split) -> tuple:
  """(preprocessed inputs, labels) of the first `model.init_examples` training examples (None: all)
  for a model with a data-dependent initialisation (`init_from_data`: airbench's whitening layer,
  the n-gram model's Naive Bayes ratios); () for the others."""
  contract = models.contract_of(model)
  if contract.init_from_data is None:
    return ()
  count = contract.init_examples
  return pipeline.preprocess_for_eval(dataset, train_split.inputs[:count]), train_split.labels[:count]


def _history_entry(epoch: int, step: int, train: dict, evaluation: dict | None, seconds: float,
                   train_seconds: float, trained_steps: int, config: Config, flops_per_step: float) -> dict:
  entry = {'epoch': epoch + 1, 'step': step, 'train_loss': train['loss'], 'train_accuracy': train['accuracy']}
  if evaluation is not None:
    entry.update(eval_loss=evaluation['loss'], eval_accuracy=evaluation['accuracy'],
                 eval_examples=evaluation['num_examples'])
  entry.update(seconds=round(seconds, 3),
               train_images_per_second=round(trained_steps * config.batch_size / train_seconds, 1))
  if flops_per_step:
    entry.update(flops_per_step=flops_per_step,
                 train_gflops_per_second=round(flops_per_step * trained_steps / train_seconds / 1e9, 2),
                 train_pflop=flops_per_step * step / 1e15)  # training compute so far (XLA's count)
  return entry


def _log_flops(flops_per_step: float) -> None:
  if flops_per_step:
    log.info('train step: %.1f MFLOP per step (XLA cost analysis)', flops_per_step / 1e6)
  else:  # some GPU plugins give no cost analysis
    log.info('train step: XLA gives no FLOP count on %s; FLOP figures are left out', jax.default_backend())


def train_and_evaluate(config: Config, workdir, data_dir: str | None = None) -> list[dict]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the history.

  Set up, restore, then per epoch: train, evaluate, report, save. A SIGTERM (preemption) saves the
  step reached and returns early; the same call resumes there. A full disk stops the run with one
  ZooError line, whichever file was being written."""
  with workdir_lib.full_disk_as_error(workdir):
    return _train_and_evaluate(config, Path(workdir), data_dir)


def _train_and_evaluate(config: Config, workdir: Path, data_dir: str | None) -> list[dict]:
  config = builder.with_all_settings(config)  # what config.json records and a resume compares
  if config.init_from and not finetune.has_checkpoint(workdir):  # a shipped name, .zoo file or URL: its folder
    config = dataclasses.replace(config, init_from=str(packed.locate(config.init_from)))
  mesh = steps.data_mesh()
  dataset, train_split, eval_split, steps_per_epoch, source = _open(config, workdir, data_dir)
  program = builder.build(config, dataset.model_kwargs(), pipeline.preprocess_for_eval(dataset, train_split.inputs[:1]),
                          steps_per_epoch, mesh)
  state = program.init_state(*data_for_init(program.model, dataset, train_split))
  start = finetune.start_from(program, state, source, workdir) if source else None  # raises if it does not fit
  if _is_chief():  # Only once every name, split and source has proven valid: a typo must not be recorded.
    workdir_lib.record_config(config, workdir)
    workdir_lib.record_description(workdir, dataset.describe())  # class names and input format, for zoo.load
    if start:
      finetune.record(workdir, start, dataset)
  metrics = steps.zero_metrics(mesh)
  manager = checkpoints.create_manager(workdir, keep=config.keep_checkpoints)
  if start:  # a fine-tuning run's first start (a workdir holding a checkpoint restores it below)
    state = start.state
  if manager.latest_step() is not None:
    state, metrics = checkpoints.restore(manager, state, metrics, set_aside_unreadable=True)
    log.info('Resuming from step %d in %s', int(state.step), manager.directory)
  step = int(state.step)
  if start:  # its checkpoint 0: a resume restores it (or a later one) and never reads the source again
    _save(manager, state, metrics, step, 0.0)
  history = [h for h in workdir_lib.read_history(workdir) if h['epoch'] <= step // steps_per_epoch]
  total_steps = config.epochs * steps_per_epoch
  rng = jax.random.key(config.seed)
  feed = feeds.create(config, program, dataset, train_split)
  evaluator = feeds.create_eval(config, program, dataset, eval_split)
  tensorboard = progress.TensorBoard(workdir, enabled=_is_chief() and config.tensorboard)
  log.info('Training %s on %s: %d epochs x %d steps of %d examples over %d device(s) in %d process(es); '
           'input pipeline: %s', config.model, config.data_name, config.epochs, steps_per_epoch,
           config.batch_size, jax.device_count(), jax.process_count(), type(feed).__name__)
  log.info('Evaluating the %s weights', config.weights)

  preemption = Preemption()
  flops_logged = False
  for epoch in range(step // steps_per_epoch, config.epochs):
    # Train.
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
        _log_flops(feed.flops_per_step)
      step = stop
      # Asked at every boundary (processes agree on the step); at an epoch's end: finish the epoch first.
      if preemption.should_stop(step, metrics) and step % steps_per_epoch:
        _save(manager, state, metrics, step, _summarise(metrics)['loss'])
        return _stop_for_preemption(preemption, manager, step, history)
      if step % config.log_every_steps == 0:
        summary = _summarise(metrics)
        _check_finite(summary['loss'], manager, step)
        _log_progress(config, summary, epoch, step, total_steps, step - epoch * steps_per_epoch - first_step,
                      time.perf_counter() - epoch_start, feed.flops_per_step)
      if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0 and step % steps_per_epoch:
        _save(manager, state, metrics, step, _summarise(metrics)['loss'])  # (an epoch's last step: below)
    train = _summarise(metrics)
    train_seconds = time.perf_counter() - epoch_start
    _check_finite(train['loss'], manager, step, state)  # before this epoch leaves any trace
    # Evaluate.
    evaluation = None
    if (epoch + 1) % config.eval_every_epochs == 0 or epoch + 1 == config.epochs:
      evaluation = _evaluation(evaluator.logits(steps.evaluated(state)), eval_split.labels)
    # Report.
    entry = _history_entry(epoch, step, train, evaluation, time.perf_counter() - epoch_start, train_seconds,
                           steps_per_epoch - first_step, config, feed.flops_per_step)
    history.append(entry)
    log.info('epoch %d/%d: %s', epoch + 1, config.epochs, entry)
    if _is_chief():
      workdir_lib.write_history(workdir, history)
      report.plot_history(history, workdir_lib.plot_path(workdir), title=f'{config.model} on {config.data_name}')
      tensorboard.scalars(step, {k: v for k, v in entry.items() if k not in ('epoch', 'step')})
    # Save, after the history: a kill in between leaves an entry that the resumed run drops and
    # redoes, never a checkpoint whose epoch has no entry.
    metrics = steps.zero_metrics(mesh)  # the next epoch's sums start from zero, also when resumed here
    _save(manager, state, metrics, step, train['loss'])
    if preemption.requested:
      return _stop_for_preemption(preemption, manager, step, history)
  checkpoints.wait_until_finished(manager)
  tensorboard.close()
  preemption.restore()
  return history


def _log_progress(config: Config, summary: dict, epoch: int, step: int, total_steps: int, done: int,
                  elapsed: float, flops_per_step: float) -> None:
  rate = done * config.batch_size / elapsed
  log.info('epoch %d/%d step %d/%d: loss %.4f accuracy %.4f, %.0f examples/s, %.1f GFLOP/s, ETA %s',
           epoch + 1, config.epochs, step, total_steps, summary['loss'], summary['accuracy'],
           rate, flops_per_step * done / elapsed / 1e9,
           progress.format_duration((total_steps - step) * config.batch_size / rate))


def evaluate(workdir, data_dir: str | None = None, step: int | None = None, model_settings: dict | None = None,
             output=None, weights: str = 'auto', **overrides) -> dict:
  """Evaluates a checkpoint of `workdir` (default: the newest) with the config recorded there, but
  for `overrides` of fields whose role is `eval` (`eval_split`, `eval_batch_size`: recorded in
  eval.json) or `runtime`, and `model_settings` whose role is `eval` (airbench's `tta_level`).
  Every example's prediction is computed once, and accuracy, loss, the report's metrics
  (`zoo.report`) and its pictures all come from it: writes eval.json and
  `report/index.html` into `output`, by default the workdir (a packed model, which is only read:
  `./eval_<dataset>_<model>/`); returns what eval.json holds. `weights`: 'auto' (the --ema_decay
  average when the run keeps one, as its own evaluations used) or 'trained' (the weights themselves,
  to compare the two)."""
  workdir = Path(workdir)
  allowed = Config.fields_with_role('eval', 'runtime')
  if set(overrides) - set(allowed):
    raise ValueError(f'evaluate() may override only {allowed}, not {sorted(set(overrides) - set(allowed))}')
  opened = builder.open_workdir(workdir, data_dir, **overrides)
  config, dataset = opened.config, opened.dataset
  if model_settings:
    models.resolve_settings(config.model, model_settings, roles=('eval',))
    config = dataclasses.replace(config, model_settings={**config.model_settings, **model_settings})
  config.validate(jax.device_count())
  is_packed = packed.is_packed(workdir)
  if weights not in ('auto', 'trained'):
    raise ValueError(f'weights={weights!r}: pass auto or trained')
  weights = config.weights if weights == 'auto' else weights
  if is_packed and weights == 'trained' and config.ema_decay:
    raise ZooError(f'{workdir} is a packed model: it holds the moving average alone; pass --eval_weights=auto, or '
                   'evaluate the workdir it was packed from')
  if not is_packed and checkpoints.create_manager(workdir, read_only=True).latest_step() is None:
    raise ZooError(f'{workdir} has no checkpoint yet; train first (--mode=train) or pass another --workdir')
  eval_split = dataset.load(config.eval_split)
  mesh = steps.data_mesh()
  program = builder.build(config, dataset.model_kwargs(), pipeline.preprocess_for_eval(dataset, eval_split.inputs[:1]),
                          1, mesh)
  if is_packed:  # one checkpoint's variables, no optimizer state
    saved_step, tree = checkpoints.restore_arrays(workdir, step)
    replicate = lambda t: jax.tree.map(lambda x: steps.put_global(np.asarray(x), steps.replicated(mesh)), t)
    variables = checkpoints.model_variables(tree)  # (a packed run's moving average is its weights)
    state = program.init_state()
    state = state.replace(step=replicate(np.int32(saved_step)), params=replicate(variables['params']),
                          **({'batch_stats': replicate(variables['batch_stats'])} if 'batch_stats' in variables else {}))
    default_output = Path.cwd() / f'eval_{config.data_name}_{config.model}'
  else:
    manager = checkpoints.create_manager(workdir, read_only=True)
    state, _ = checkpoints.restore(manager, program.init_state(), steps.zero_metrics(mesh), step)
    if weights == 'ema':
      state = steps.evaluated(state)
    default_output = workdir
  output = Path(output) if output else default_output
  log.info('evaluating the %s weights of step %d', weights, int(state.step))
  start = time.perf_counter()
  logits = feeds.create_eval(config, program, dataset, eval_split).logits(state)
  labels = eval_split.labels
  sums = _evaluation(logits, labels)
  probabilities = models.probabilities(logits)
  class_names = list(opened.description['class_names'])
  result = {'split': config.eval_split, 'step': int(state.step), 'num_examples': len(labels),
            'accuracy': sums['accuracy'], 'loss': sums['loss'], 'dataset': config.data_name, 'model': config.model,
            **{k: v for k, v in overrides.items() if k in Config.fields_with_role('eval') and k != 'eval_split'},
            **({'model_settings': model_settings} if model_settings else {}),
            **({'weights': weights} if config.ema_decay else {}),
            **report.classification_metrics(probabilities, labels, class_names)}
  log.info('evaluated %d examples in %.1f s', len(labels), time.perf_counter() - start)
  if _is_chief():
    output.mkdir(parents=True, exist_ok=True)
    with workdir_lib.full_disk_as_error(output):  # the report's pictures too
      workdir_lib.write_eval(output, result)
      examples = dataset.texts(config.eval_split) if dataset.kind == 'text' else eval_split.inputs
      page = report.write_report(
          workdir_lib.report_dir(output), result, probabilities, labels, kind=dataset.kind, examples=examples,
          history=workdir_lib.read_history(workdir), title=f'{config.model} on {config.data_name}',
          summary={k: result[k] for k in ('model', 'dataset', 'split', 'step', 'num_examples', 'accuracy', 'loss')})
    log.info('report: %s', page)
  return result
