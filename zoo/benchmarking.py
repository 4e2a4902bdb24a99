"""Throughput measurements: how fast a zoo train step runs, what it costs in FLOPs, how close that
is to the machine's matmul peak, and whether the input pipeline keeps up.

All timings exclude compilation (reported separately) and block on the result, so asynchronous
dispatch cannot flatter them.
"""
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from zoo.config import Config
from zoo.data import pipeline, tensorflow_import
from zoo.training import builder, feeds, steps

MIN_SECONDS = 5.0  # time at least this long: a shared machine's step times jitter (docs/performance.md)
# The plain step's timer has no split: lookahead's schedule is laid over this many steps per epoch
# (its per-step work does not depend on it).
NOMINAL_STEPS_PER_EPOCH = 100


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
  """Achieved GFLOP/s of a float32 size x size matmul: the practical peak to compare against."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, a).block_until_ready()
  start = time.perf_counter()
  for _ in range(repeats):
    out = matmul(a, a)
  out.block_until_ready()
  return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def _timed(run_steps, num_steps: int) -> float:
  """Seconds per step of `run_steps(n) -> result` over at least `num_steps` steps and MIN_SECONDS."""
  done, start = 0, time.perf_counter()
  while done < num_steps or time.perf_counter() - start < MIN_SECONDS:
    jax.block_until_ready(run_steps(num_steps))
    done += num_steps
  return (time.perf_counter() - start) / done


def train_step_timer(config: Config, batch: dict, model_kwargs: dict, *, num_steps: int = 30,
                     batch_norm_sync: bool = True):
  """Compile time and FLOPs of the train step that training runs for `config` (built by
  `builder.build`), and a function that times it (seconds per step, steps dispatched back to back as
  the training loop does) on one batch already on the devices: the baseline the input pipelines are
  measured against.

  `batch_norm_sync=False` times the same step with the plain model as the state's `apply_fn`
  (`program.model`, no `axis_name`): each device normalises with its own rows' statistics, as
  before BatchNorm was synchronised, so that `--compare_batch_norm_sync` measures what
  synchronising costs without the training code offering an unsynchronised mode;
  `info['batch_norm']` says whether the model has BatchNorm at all."""
  mesh = steps.data_mesh()
  program = builder.build(config, model_kwargs, batch['inputs'], NOMINAL_STEPS_PER_EPOCH, mesh)
  train_step = program.train_step
  state = program.init_state()
  if not batch_norm_sync:  # a static field of the state: the step is traced again with this model
    state = state.replace(apply_fn=program.model.apply)
  carry = [state, steps.zero_metrics(mesh)]
  global_batch = steps.to_global_batch(batch, mesh)
  rng = jax.random.key(0)
  start = time.perf_counter()
  lowered = train_step.lower(*carry, global_batch, rng)
  compiled = lowered.compile()
  info = {'compile_seconds': time.perf_counter() - start, 'flops_per_step': steps.flops_per_step(lowered),
          'batch_norm': bool(carry[0].batch_stats)}

  def run_steps(n):
    for _ in range(n):
      carry[:] = compiled(*carry, global_batch, rng)
    return carry[1]
  run_steps(1)  # warm-up
  return info, lambda: _timed(run_steps, num_steps)


def feed_step_timer(config: Config, dataset, split: pipeline.ArraySplit, *, num_steps: int = 30):
  """A function timing steps whose batches come through the real input pipeline
  `config.input_pipeline` (`feeds.py`: the split held on the devices, or tf.data), gathering,
  preprocessing and augmentation included (seconds per step)."""
  mesh = steps.data_mesh()
  config = dataclasses.replace(config, steps_per_dispatch=max(num_steps, 1))
  per_epoch = pipeline.steps_per_epoch(split.num_examples, config.batch_size)
  program = builder.build(config, dataset.model_kwargs(), pipeline.preprocess_for_eval(dataset, split.inputs[:1]),
                          per_epoch, mesh)
  feed = feeds.create(config, program, dataset, split)
  carry = [program.init_state(), steps.zero_metrics(mesh)]
  rng = jax.random.key(0)
  position = {'epoch': 0, 'step': 0}
  feed.start_epoch(0, 0)

  def run_steps(n):
    while n:  # chunks of at most n steps, never past an epoch's end
      chunk = min(n, per_epoch - position['step'])
      carry[:] = feed.run(*carry, rng, chunk)
      position['step'] += chunk
      n -= chunk
      if position['step'] == per_epoch:
        position['epoch'], position['step'] = position['epoch'] + 1, 0
        feed.start_epoch(position['epoch'], 0)
    return carry[1]
  jax.block_until_ready(run_steps(1))  # compiles
  return lambda: _timed(run_steps, num_steps)


def measure_keras_training(model, batch_size: int, *, num_steps: int = 200, warmup_steps: int = 20) -> float:
  """Training images/s of a Keras CIFAR-10 model (e.g. `lab.keras_reference.seed_cnn()`),
  compiled here as the seed compiles its CNN: Adam, from-logits cross-entropy. TensorFlow comes
  through the one import that keeps it off the accelerators, where the zoo's JAX steps run."""
  tf = tensorflow_import.tensorflow()
  model.compile(optimizer='adam', loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=['accuracy'])
  rng = np.random.default_rng(0)
  images = rng.random(((num_steps + warmup_steps) * batch_size, 32, 32, 3), dtype=np.float32)
  labels = rng.integers(0, 10, len(images))

  class Clock(tf.keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
      if batch == warmup_steps:
        self.start = time.perf_counter()

    def on_train_end(self, logs=None):
      self.seconds = time.perf_counter() - self.start

  clock = Clock()
  model.fit(images, labels, batch_size=batch_size, epochs=1, verbose=0, callbacks=[clock], shuffle=False)
  return num_steps * batch_size / clock.seconds
