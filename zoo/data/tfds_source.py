"""Reading TFDS splits into host memory, with one-line errors for the ways this goes wrong.

The zoo's datasets are small (CIFAR-10 train is 150 MB of uint8, IMDB 33 MB of text), so each
split is read once and held in memory; the per-epoch pipeline then only gathers and preprocesses.
"""
import os
import socket

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from zoo.errors import ZooError

DOWNLOAD_HOST = 'storage.googleapis.com'  # TFDS fetches prepared datasets from GCS first


def hide_accelerators_from_tensorflow() -> None:
  """TensorFlow only feeds data: it must not grab the GPU/TPU memory JAX needs."""
  try:
    tf.config.set_visible_devices([], 'GPU')
    tf.config.set_visible_devices([], 'TPU')
  except (RuntimeError, ValueError):
    pass  # Devices already initialised (a second call) or no such device type: nothing to hide.


def open_builder(name: str, data_dir: str | None):
  """A prepared TFDS builder; downloads when online, says what to pass when that fails."""
  hide_accelerators_from_tensorflow()
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    try:
      if not _online():
        raise ConnectionError('no network: download hosts do not resolve')
      builder.download_and_prepare()
    except Exception as e:  # Offline, proxy, disk: every cause gets the same fix.
      where = data_dir or os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets'
      raise ZooError(
          f'{name} is not prepared in {where} and could not be downloaded ({type(e).__name__}: {e}); '
          'pass --data_dir=DIR holding a prepared copy (for example --data_dir=../shared/tfds), '
          'or run once with network access') from e
  return builder


def _online() -> bool:
  """A DNS lookup of TFDS's download host: offline, TFDS would retry for minutes before failing."""
  try:
    socket.getaddrinfo(DOWNLOAD_HOST, 443)
    return True
  except OSError:
    return False


def load_split(name: str, split: str, data_dir: str | None) -> dict[str, np.ndarray]:
  """Every feature of `split` (TFDS slicing syntax) as one numpy array per key, in stored order."""
  builder = open_builder(name, data_dir)
  try:
    dataset = builder.as_dataset(split=split, shuffle_files=False)
  except (KeyError, ValueError, AssertionError) as e:
    available = ', '.join(sorted(builder.info.splits.keys())) or 'none'
    raise ZooError(f'split {split!r} cannot be read from {name} in {builder.data_dir} ({e}); available '
                   f'splits: {available}; slices such as "train[:90%]" or "train[45000:]" work') from e
  # Read in large batches rather than with batch_size=-1, which needs a known cardinality.
  chunks = list(tfds.as_numpy(dataset.batch(8192).prefetch(2)))
  if not chunks:
    raise ZooError(f'split {split!r} of {name} is empty; pass a split with examples in it')
  return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}


def prepared_examples(name: str, split: str, data_dir: str | None) -> int | None:
  """The example count the prepared dataset's own metadata gives for `split`; None if it gives none
  (not prepared, or `tfds.testing.mock_data`, whose examples must never be taken for real ones)."""
  try:
    return tfds.builder(name, data_dir=data_dir).info.splits[split].num_examples
  except Exception:  # Not prepared, unknown split, mocked: no count is the safe answer.
    return None
