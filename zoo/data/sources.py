"""Where a split's arrays come from: an exported `.npz` in `data_dir` if there is one, else TFDS,
through a cache of decoded splits.

Why the cache: CIFAR-10's PNGs are decoded on every read of the prepared TFDS files (~3 s for the
30,000 images of the seed recipe's two splits on the 2-core CPU, with OpenCV on two threads); the
decoded arrays, once written to `cache_dir`, load in well under a second. The cache key covers
the dataset's prepared files (paths, sizes, modification times) and the split, so a re-prepared
dataset is read afresh. It is used only with an explicit `--data_dir`, and only a split whose
example count matches the prepared metadata is written: `tfds.testing.mock_data` serves random
examples whatever the directory, and they must neither be cached nor be answered with cached real
ones.
"""
import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from zoo.data import exported
from zoo.errors import ZooError

log = logging.getLogger('zoo')


def load_split(name: str, split: str, data_dir: str | None, cache_dir: str = '') -> dict[str, np.ndarray]:
  path = exported.split_path(data_dir, name, split) if data_dir is not None else None
  if path is not None and path.exists():
    if exported.meta(path).get('split') != split:
      raise ZooError(f'{path} holds split {exported.meta(path).get("split")!r}, not {split!r} (their file names '
                     'collide); export one of them to another --out_dir')
    return exported.load(path)
  cached = _cache_path(cache_dir, name, split, data_dir)
  if cached is not None and cached.exists():
    try:
      return exported.load(cached)
    except (OSError, ValueError, KeyError, ZooError) as e:  # a damaged entry is re-read from TFDS
      log.warning('Ignoring the unreadable cached split %s (%s)', cached, e)
  arrays = _load_from_tfds(name, split, data_dir)
  if cached is not None and _is_the_prepared_split(arrays, name, split, data_dir):
    try:
      exported.save(cached, arrays, {'dataset': name, 'split': split, 'source': str(data_dir)},
                    compress=False)
    except OSError as e:  # a full or read-only disk costs speed, not the run
      log.warning('Could not cache split %s of %s in %s (%s)', split, name, cached.parent, e)
  return arrays


def class_names(name: str, data_dir: str | None) -> list[str] | None:
  """The label names of dataset `name`: from an exported split's metadata, else from TFDS's (the
  prepared dataset's `ClassLabel`); None when neither can be read here."""
  if data_dir is not None:
    folder = exported.split_path(data_dir, name, 'any').parent
    for path in sorted(folder.glob('*.npz')) if folder.is_dir() else ():
      if exported.meta(path).get('class_names'):
        return list(exported.meta(path)['class_names'])
  try:
    import tensorflow_datasets as tfds
    return [str(n) for n in tfds.builder(name, data_dir=data_dir).info.features['label'].names]
  except Exception:  # TFDS missing, dataset unknown to it, metadata unreadable: no names
    return None


def _load_from_tfds(name: str, split: str, data_dir: str | None) -> dict[str, np.ndarray]:
  try:
    from zoo.data import tfds_source  # TensorFlow and TFDS: only needed here
  except ImportError as e:
    folder = exported.split_path(data_dir or '<data_dir>', name, split).parent
    have = sorted(exported.meta(p).get('split', p.stem) for p in folder.glob('*.npz')) if data_dir and folder.is_dir() else []
    raise ZooError(f'split {split!r} of {name} is not exported in {folder} (have: {", ".join(have) or "none"}) '
                   f'and TFDS cannot be read here ({e}); export it where TensorFlow is installed '
                   f'(python -m experiments.export_splits --dataset={name} --splits="{split}") '
                   'or install tensorflow and tensorflow-datasets') from e
  return tfds_source.load_split(name, split, data_dir)


def _is_the_prepared_split(arrays: dict, name: str, split: str, data_dir: str | None) -> bool:
  """Whether what TFDS returned has the prepared split's example count (mock data does not)."""
  from zoo.data import tfds_source
  return len(next(iter(arrays.values()))) == tfds_source.prepared_examples(name, split, data_dir)


def _cache_path(cache_dir: str, name: str, split: str, data_dir: str | None) -> Path | None:
  """<cache_dir>/<name>/<key>.npz, or None when caching is off, `data_dir` is not given (so that
  `tfds.testing.mock_data`, which ignores the directory, is never answered from the cache) or it
  holds no prepared files."""
  if not cache_dir or not data_dir:
    return None
  root = Path(data_dir).expanduser().resolve() / name
  files = sorted((str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns)
                 for f in root.rglob('*') if f.is_file()) if root.is_dir() else []
  if not any('.tfrecord' in f[0] or '.array_record' in f[0] for f in files):
    return None
  key = hashlib.sha256(json.dumps([name, split, str(root), files]).encode()).hexdigest()[:24]
  return Path(cache_dir).expanduser() / name / f'{key}.npz'
