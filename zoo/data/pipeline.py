"""From an in-memory split to per-process numpy batches, through tf.data.

The example order is a function of (seed, epoch) and the *global* batch only: every process
computes the same global batches and keeps its own rows of each, so 1 process with N devices and N
processes with one device each see exactly the same data, and a run resumed at step k of an epoch
sees exactly the batches an uninterrupted run would have. Random augmentation draws its numbers
here too, per global example, for the same reason.
"""
import dataclasses
from typing import Any, Callable, Iterator, Optional

import numpy as np

from zoo.data import mixing, tensorflow_import

# (inputs batch, per-example uniform noise in [0, 1) or None at eval) -> model-ready inputs, as
# tf.Tensors. TensorFlow is imported where tf.data is built: a machine with JAX alone (a GPU box)
# trains from saved .npz splits on the device feed without it.
Preprocess = Callable[[Any, Optional[Any]], Any]


@dataclasses.dataclass(frozen=True)
class ArraySplit:
  """One split held in memory: raw model inputs and integer labels, indexed by example."""
  inputs: np.ndarray
  labels: np.ndarray

  @property
  def num_examples(self) -> int:
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class ProcessSlice:
  """Which rows of every global batch this process feeds to its devices."""
  index: int = 0
  count: int = 1

  def of(self, global_batch: int) -> slice:
    local = global_batch // self.count
    return slice(self.index * local, (self.index + 1) * local)


def preprocess_for_eval(dataset, inputs: np.ndarray) -> np.ndarray:
  """A few host inputs made model-ready (no augmentation), by the implementation that needs no
  TensorFlow where the dataset has one: both compute the same values (`tests/test_data.py`)."""
  on_device = getattr(dataset, 'preprocess_on_device', None)
  return np.asarray(on_device(inputs, None) if on_device else dataset.preprocess(inputs, None))


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
  return num_examples // global_batch  # The ragged remainder is dropped; the order reshuffles it.


_RUN_COINS = 0xC015  # seeds the once-per-run coins apart from any [seed, epoch] stream


def epoch_plan(num_examples: int, global_batch: int, seed: int, epoch: int, noise_per_example: int = 0,
               alternating_columns: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
  """The epoch's example indices [steps, global_batch] and augmentation noise [steps, global_batch,
  noise_per_example]: a function of (seed, epoch) alone, shared by both input pipelines.

  Noise columns in `alternating_columns` are coins (< 0.5 or not) drawn once per example for the
  whole run and inverted in odd epochs: airbench's alternating flip, which mirrors every image
  exactly every other epoch instead of at random."""
  steps = steps_per_epoch(num_examples, global_batch)
  rng = np.random.default_rng([seed, epoch])
  order = rng.permutation(num_examples)[:steps * global_batch].reshape(steps, global_batch)
  noise = rng.random((steps, global_batch, noise_per_example), dtype=np.float32)
  for column in alternating_columns:
    heads = np.random.default_rng([seed, column, _RUN_COINS]).random(num_examples) < 0.5
    noise[..., column] = np.where(heads[order] != bool(epoch % 2), 0.25, 0.75)
  return order.astype(np.int32), noise


def train_batches(split: ArraySplit, preprocess: Preprocess, *, global_batch: int, seed: int,
                  epoch: int, start_step: int = 0, noise_per_example: int = 0,
                  alternating_columns: tuple[int, ...] = (), mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                  process: ProcessSlice = ProcessSlice()) -> Iterator[dict]:
  """This process's share of the epoch's global batches, from `start_step` on; with mixing
  (`zoo.data.mixing`), each row's partner (`partner_inputs`, `partner_label`) and draws (`mix`)."""
  tf = tensorflow_import.tensorflow()
  order, noise = epoch_plan(split.num_examples, global_batch, seed, epoch, noise_per_example,
                            alternating_columns)
  plan = {'order': order, 'noise': noise}
  if mixup_alpha or cutmix_alpha:
    plan.update(mixing.plan(order, noise, seed, epoch, mixup_alpha, cutmix_alpha))
  rows = process.of(global_batch)
  plan = {k: v[start_step:, rows] for k, v in plan.items()}
  inputs, labels = tf.constant(split.inputs), tf.constant(split.labels)

  def examples(indices, batch_noise):
    return preprocess(tf.gather(inputs, indices), batch_noise if noise_per_example else None), tf.gather(labels, indices)

  def make_batch(step):
    images, label = examples(step['order'], step['noise'])
    batch = {'inputs': images, 'label': label, 'mask': tf.ones_like(step['order'], dtype=tf.float32)}
    if 'mix' in step:
      partner_images, partner_label = examples(step['partner'], step['partner_noise'])
      batch.update(partner_inputs=partner_images, partner_label=partner_label, mix=step['mix'])
    return batch

  dataset = tf.data.Dataset.from_tensor_slices(plan)
  dataset = dataset.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def eval_plan(num_examples: int, global_batch: int) -> tuple[np.ndarray, np.ndarray]:
  """Example indices and 0/1 mask [steps, global_batch] covering every example once, in order."""
  steps = -(-num_examples // global_batch)
  positions = np.arange(steps * global_batch).reshape(steps, global_batch)
  mask = (positions < num_examples).astype(np.float32)
  return np.where(mask > 0, positions, 0).astype(np.int32), mask


def eval_batches(split: ArraySplit, preprocess: Preprocess, *, global_batch: int,
                 process: ProcessSlice = ProcessSlice()) -> Iterator[dict]:
  """Every example exactly once: the last global batch is padded and its padding masked out."""
  tf = tensorflow_import.tensorflow()
  indices, mask = eval_plan(split.num_examples, global_batch)
  rows = process.of(global_batch)
  indices, mask = indices[:, rows], mask[:, rows]
  inputs, labels = tf.constant(split.inputs), tf.constant(split.labels)

  def make_batch(batch_indices, batch_mask):
    return {'inputs': preprocess(tf.gather(inputs, batch_indices), None),
            'label': tf.gather(labels, batch_indices), 'mask': batch_mask}

  dataset = tf.data.Dataset.from_tensor_slices((indices, mask))
  dataset = dataset.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
