"""Training throughput of the zoo's models: `python -m lab.benchmark [--data_dir=DIR]`.

For each model: compile time, steady-state step time on a batch already on the devices, FLOPs per
step (XLA's cost analysis of the lowered step, `steps.flops_per_step`: on GPUs the compiled
program's analysis counts cuDNN convolutions as 0), achieved GFLOP/s and its fraction of a measured
float32 matmul peak; the seed's Keras CNN measured in the same run for the ratio; and, with
--data_dir, the step time through the real input pipeline against the on-device step time; with
--compare_batch_norm_sync, what averaging BatchNorm statistics over the devices costs per step.
Prints a Markdown table and one JSON line per row.
"""
import dataclasses
import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax
import numpy as np
from absl import app, flags, logging

from experiments import launch
from zoo import benchmarking
from zoo.config import Config

flags.DEFINE_list('models', ['simple_cnn', 'mlp', 'resnet20', 'lstm', 'bilstm'], 'Models to measure.')
flags.DEFINE_integer('batch_size', None, 'Global batch for every model (default: each recipe\'s batch).')
flags.DEFINE_integer('steps', 30, 'Steps per timed call (and at least this many per measurement).')
flags.DEFINE_integer('rounds', 3, 'Interleaved measurement rounds per model; the table gives medians.')
flags.DEFINE_bool('keras', True, 'Also time the seed\'s Keras CNN at simple_cnn\'s batch size.')
flags.DEFINE_string('data_dir', None, 'A TFDS directory with cifar10: also time the real input pipeline.')
flags.DEFINE_list('pipelines', ['device', 'tf_data'], 'Input pipelines timed with --data_dir (tf_data needs TensorFlow).')
flags.DEFINE_string('pipeline_split', 'train[:20000]', 'The cifar10 split the pipelines are timed on.')
flags.DEFINE_bool('compare_batch_norm_sync', False,
                  'For models with BatchNorm: also time the step with each device normalising by its own '
                  'rows\' statistics (unsynchronised, as before the zoo averaged them over the devices) in '
                  'the same interleaved rounds, and report what synchronising costs.')
FLAGS = flags.FLAGS

# Each model is timed with the settings of its recipe (optimizer, lookahead, frozen layers, batch),
# so that the step timed is the step that recipe trains with.
_RECIPE_FILES = {'simple_cnn': 'cifar_seed.flags', 'mlp': 'cifar_mlp.flags', 'resnet20': 'cifar_resnet20.flags',
                 'airbench': 'cifar_airbench.flags',  # slow on a CPU: name it in --models
                 'lstm': 'imdb_seed.flags', 'bilstm': 'imdb_bilstm.flags'}
CIFAR_CLASSES, IMDB_CLASSES = 10, 1  # IMDB: two classes, one logit


def recipe(name: str) -> tuple[Config, tuple, type, dict]:
  """(config, input shape, input dtype, model kwargs) of model `name`'s recipe."""
  config = launch.read_recipe(launch.RECIPES / _RECIPE_FILES[name])
  if config.dataset == 'imdb_reviews':
    return config, (config.max_length,), np.int32, {'vocab_size': config.vocab_size, 'num_classes': IMDB_CLASSES}
  return config, (32, 32, 3), np.float32, {'num_classes': CIFAR_CLASSES}


def synthetic_batch(shape, dtype, batch_size, model_kwargs):
  rng = np.random.default_rng(0)
  if dtype == np.int32:
    inputs = rng.integers(1, model_kwargs['vocab_size'], (batch_size, *shape)).astype(np.int32)
  else:
    inputs = rng.random((batch_size, *shape), dtype=np.float32)
  labels = rng.integers(0, max(model_kwargs['num_classes'], 2), batch_size).astype(np.int32)
  return {'inputs': inputs, 'label': labels, 'mask': np.ones(batch_size, np.float32)}


def _rounded(value):
  if isinstance(value, list):
    return [_rounded(v) for v in value]
  return round(value, 5) if isinstance(value, float) else value


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)  # TFDS and orbax INFO lines would bury the table
  peak = benchmarking.matmul_peak_gflops()
  device = f'{jax.device_count()} x {jax.devices()[0].device_kind}'
  print(f'float32 2048x2048 matmul peak: {peak:.0f} GFLOP/s on {device}', flush=True)
  rows = []
  for name in FLAGS.models:
    config, shape, dtype, kwargs = recipe(name)
    batch_size = FLAGS.batch_size or config.batch_size
    config = dataclasses.replace(config, batch_size=batch_size)
    info, time_step = benchmarking.train_step_timer(config, synthetic_batch(shape, dtype, batch_size, kwargs),
                                                    kwargs, num_steps=FLAGS.steps)
    timers = {'step_seconds': time_step}
    if FLAGS.compare_batch_norm_sync and info['batch_norm']:
      _, timers['unsynced_step_seconds'] = benchmarking.train_step_timer(
          config, synthetic_batch(shape, dtype, batch_size, kwargs), kwargs, num_steps=FLAGS.steps,
          batch_norm_sync=False)
    if config.dataset == 'cifar10' and FLAGS.data_dir:
      from zoo.data import open_dataset
      data = open_dataset(config, FLAGS.data_dir, None)
      split = data.load(FLAGS.pipeline_split)
      for kind in FLAGS.pipelines:
        timers[f'{kind}_pipeline_step_seconds'] = benchmarking.feed_step_timer(
            dataclasses.replace(config, input_pipeline=kind), data, split, num_steps=FLAGS.steps)
    # Interleaved rounds, medians: this shared machine's speed drifts by 10-30 % within minutes.
    times = {key: [] for key in timers}
    for _ in range(FLAGS.rounds):
      for key, timer in timers.items():
        times[key].append(timer())
    row = {'model': name, 'batch_size': batch_size, **info, **{k: float(np.median(v)) for k, v in times.items()}}
    row['examples_per_second'] = batch_size / row['step_seconds']
    row['gflops_per_second'] = row['flops_per_step'] / row['step_seconds'] / 1e9
    row['fraction_of_peak'] = row['gflops_per_second'] / peak
    for kind in ('device', 'tf_data'):
      if f'{kind}_pipeline_step_seconds' in times:
        ratios = np.array(times[f'{kind}_pipeline_step_seconds']) / np.array(times['step_seconds'])
        row[f'{kind}_pipeline_overhead'] = float(np.median(ratios)) - 1  # per round: same machine state
    if 'unsynced_step_seconds' in times:  # per round (same machine state), then median and range
      ratios = np.array(times['step_seconds']) / np.array(times['unsynced_step_seconds']) - 1
      row['batch_norm_sync_cost'] = float(np.median(ratios))
      row['batch_norm_sync_cost_range'] = [float(ratios.min()), float(ratios.max())]
      row['step_seconds_rounds'] = times['step_seconds']
      row['unsynced_step_seconds_rounds'] = times['unsynced_step_seconds']
    if name == 'simple_cnn' and FLAGS.keras:
      from zoo.data import tensorflow_import
      tensorflow_import.tensorflow()  # before Keras: TensorFlow must leave the accelerators to JAX
      from lab import keras_reference
      row['keras_examples_per_second'] = benchmarking.measure_keras_training(keras_reference.seed_cnn(), batch_size)
      row['speedup_over_keras'] = row['examples_per_second'] / row['keras_examples_per_second']
    rows.append(row)
    print(json.dumps({k: _rounded(v) for k, v in row.items()}), flush=True)

  print('\n| model | batch | compile s | step ms | examples/s | MFLOP/step | GFLOP/s | of peak '
        '| pipeline overhead: device / tf.data | vs Keras |')
  print('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
  for r in rows:
    overhead = ' / '.join(f"{r[f'{kind}_pipeline_overhead']:+.1%}" if f'{kind}_pipeline_overhead' in r else '–'
                          for kind in ('device', 'tf_data'))
    keras = (f"{r['speedup_over_keras']:.2f}x ({r['keras_examples_per_second']:.0f}/s)"
             if 'speedup_over_keras' in r else '–')
    flops = (f"{r['flops_per_step'] / 1e6:.0f} | {r['gflops_per_second']:.1f} | {r['fraction_of_peak']:.1%}"
             if r['flops_per_step'] else '– | – | –')  # no cost analysis on this backend
    print(f"| {r['model']} | {r['batch_size']} | {r['compile_seconds']:.1f} | {r['step_seconds'] * 1e3:.1f} | "
          f"{r['examples_per_second']:.0f} | {flops} | {overhead} | {keras} |")
  synced = [r for r in rows if 'batch_norm_sync_cost' in r]
  if synced:
    print('\n| model | batch | step ms, BatchNorm synchronised | unsynchronised | cost: median (range over rounds) |')
    print('| --- | --- | --- | --- | --- |')
    for r in synced:
      low, high = r['batch_norm_sync_cost_range']
      print(f"| {r['model']} | {r['batch_size']} | {r['step_seconds'] * 1e3:.1f} | "
            f"{r['unsynced_step_seconds'] * 1e3:.1f} | {r['batch_norm_sync_cost']:+.1%} ({low:+.1%} .. {high:+.1%}) |")


if __name__ == '__main__':
  app.run(main)
