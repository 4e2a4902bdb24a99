"""Reading TFDS splits into host memory, with one-line errors for the ways this goes wrong.

The zoo's datasets are small (CIFAR-10 train is 150 MB of uint8, IMDB 33 MB of text), so each
split is read once and held in memory; the per-epoch pipeline then only gathers and preprocesses.

Prepared TFRecord files are read without TensorFlow: TFDS gives the split's files and record
ranges (`file_instructions`, its slicing) and decodes examples with NumPy (`ExampleParserNp`, each
feature's `decode_example_np`: OpenCV for images, PIL without it), so only the TFRecord framing is
read here: no `import tensorflow` and no tf.data decoding, and OpenCV decoding on two threads
(what each step saves: docs/performance.md). Anything else (other file formats, `tfds.testing.mock_data`, which serves
examples through `as_dataset`) goes through tf.data as before.
"""
import concurrent.futures
import mmap
import os
import socket
import struct

import numpy as np
import tensorflow_datasets as tfds

from zoo.data import tensorflow_import
from zoo.errors import ZooError

RECORDS_PER_TASK = 512  # examples parsed and decoded per thread-pool task
DOWNLOAD_HOST = 'storage.googleapis.com'  # TFDS fetches prepared datasets from GCS first


def open_builder(name: str, data_dir: str | None):
  """A prepared TFDS builder; downloads when online, says what to pass when that fails."""
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    try:
      if not _online():
        raise ConnectionError('no network: download hosts do not resolve')
      tensorflow_import.tensorflow()
      builder.download_and_prepare()
    except Exception as e:  # Offline, proxy, disk: every cause gets the same fix.
      where = data_dir or os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets'
      raise ZooError(
          f'{name} is not prepared in {where} and could not be downloaded ({type(e).__name__}: {e}); '
          'pass --data_dir=DIR holding a prepared copy (a TFDS data directory where it was built), '
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
  files = _tfrecord_files(builder, split)
  if files is not None:
    return _read_tfrecords(builder, files, split)
  tensorflow_import.tensorflow()
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


def _tfrecord_files(builder, split: str):
  """TFDS's file instructions for `split` when they name TFRecord files that exist, else None."""
  try:
    if builder.info.file_format != tfds.core.FileFormat.TFRECORD:
      return None
    instructions = builder.info.splits[split].file_instructions
  except Exception:  # unknown split, mocked info: tf.data's path gives the error or the mock data
    return None
  if not instructions or not all(os.path.isfile(i.filename) for i in instructions):
    return None  # `tfds.testing.mock_data` points the builder at metadata without record files
  return instructions


def _records(instruction):
  """The serialized examples `instruction` selects from one TFRecord file (each record: length,
  its CRC, data, the data's CRC; the CRCs are not checked, a damaged record fails to parse)."""
  with open(instruction.filename, 'rb') as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
    end = instruction.skip + instruction.take if instruction.take >= 0 else None
    records, position, index = [], 0, 0
    while position < len(data) and (end is None or index < end):
      if position + 12 > len(data):
        raise ValueError(f'truncated record header at byte {position}')
      (length,) = struct.unpack_from('<Q', data, position)
      if position + 12 + length + 4 > len(data):
        raise ValueError(f'truncated record at byte {position}')
      if index >= instruction.skip:
        records.append(data[position + 12:position + 12 + length])
      position += 12 + length + 4
      index += 1
  return records


def _read_tfrecords(builder, instructions, split: str) -> dict[str, np.ndarray]:
  """Every feature of the split, decoded as `tfds.as_numpy(builder.as_dataset(...))` gives it."""
  from tensorflow_datasets.core import example_parser
  features = builder.info.features
  parser = example_parser.ExampleParserNp(features.get_serialized_info())

  def decode(records: list) -> dict[str, list]:
    examples = [parser.parse_example(r) for r in records]
    if any(isinstance(value, dict) for value in examples[0].values()):  # nested features: TFDS decodes
      decoded = [features.decode_example_np(example) for example in examples]
      return {key: [example[key] for example in decoded] for key in decoded[0]}
    # Flat features: decoded column by column, without TFDS's per-example nesting work.
    return {key: [feature.decode_example_np(e[key]) for e in examples] for key, feature in features.items()}

  try:
    records = [r for instruction in instructions for r in _records(instruction)]
    if not records:
      raise ZooError(f'split {split!r} of {builder.name} is empty; pass a split with examples in it')
    # OpenCV decodes without the GIL, so a second thread parses while one decodes (docs/performance.md).
    # Order is kept.
    tasks = [records[i:i + RECORDS_PER_TASK] for i in range(0, len(records), RECORDS_PER_TASK)]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      parts = list(pool.map(decode, tasks))
  except ZooError:
    raise
  except Exception as e:  # a damaged file: TFDS's files are the source, so say how to get them back
    raise ZooError(f'split {split!r} of {builder.name} in {builder.data_dir} cannot be read '
                   f'({type(e).__name__}: {e}); prepare the dataset again there') from e
  return {key: _stack([value for part in parts for value in part[key]]) for key in parts[0]}


def _stack(values: list) -> np.ndarray:
  """One array per feature, as tf.data batches give it: strings as an object array of bytes, and
  arrays of different shapes (images of varying sizes) as an object array of arrays, which the
  image dataset resizes to one size."""
  if isinstance(values[0], (bytes, str)):
    return np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=object)
  if len({np.shape(v) for v in values}) > 1:
    ragged = np.empty(len(values), dtype=object)
    ragged[:] = values
    return ragged
  return np.stack(values)


def prepared_examples(name: str, split: str, data_dir: str | None) -> int | None:
  """The example count the prepared dataset's own metadata gives for `split`; None if it gives none
  (not prepared, or `tfds.testing.mock_data`, whose examples must never be taken for real ones)."""
  try:
    return tfds.builder(name, data_dir=data_dir).info.splits[split].num_examples
  except Exception:  # Not prepared, unknown split, mocked: no count is the safe answer.
    return None
