"""Where a split's arrays come from: a saved `.npz` (`npz_splits`) in `data_dir` if there is one, else TFDS,
through a cache of decoded splits.

Why the cache: CIFAR-10's PNGs are decoded on every read of the prepared TFDS files; the decoded
arrays, once written to `cache_dir`, load without decoding (what it saves: docs/performance.md). The cache key covers
the dataset's prepared files (paths, sizes, modification times), the split and
`CACHE_FORMAT_VERSION`, so a re-prepared dataset, or an entry of an older layout, is read afresh.
It is used only with an explicit `--data_dir`, and only a split whose example count matches the
prepared metadata is written: `tfds.testing.mock_data` serves random examples whatever the
directory, and they must neither be cached nor be answered with cached real ones.
"""
import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from zoo.data import npz_splits
from zoo.errors import ZooError

log = logging.getLogger('zoo')

# Bump when what a cache entry holds or how it is written changes (keys, dtypes, `npz_splits`'s file
# layout): entries of other versions are then never looked up again.
CACHE_FORMAT_VERSION = 1


def load_split(name: str, split: str, data_dir: str | None, cache_dir: str = '') -> dict[str, np.ndarray]:
  path = npz_splits.split_path(data_dir, name, split) if data_dir is not None else None
  if path is not None and path.exists():
    if npz_splits.meta(path).get('split') != split:
      raise ZooError(f'{path} holds split {npz_splits.meta(path).get("split")!r}, not {split!r} (their file names '
                     'collide); save one of them to another --out_dir')
    return npz_splits.load(path)
  cached = _cache_path(cache_dir, name, split, data_dir)
  if cached is not None and cached.exists():
    try:
      arrays = npz_splits.load(cached)
      log.info('Split %s of %s read from the split cache %s', split, name, cached)
      return arrays
    except ZooError as e:  # a damaged entry (cut short by a crash, say) is read again and written anew
      log.warning('Ignoring the unreadable cached split %s (%s)', cached, e)
  arrays = _load_from_tfds(name, split, data_dir)
  if cached is not None and _is_the_prepared_split(arrays, name, split, data_dir):
    try:
      npz_splits.save(cached, arrays, {'dataset': name, 'split': split, 'source': str(data_dir)},
                    compress=False)
    except OSError as e:  # a full or read-only disk costs speed, not the run
      log.warning('Could not cache split %s of %s in %s (%s)', split, name, cached.parent, e)
  return arrays


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a classification dataset is: its input and label features, class names, image shape."""
  name: str
  kind: str                      # 'image' or 'text'
  input_key: str                 # e.g. 'image', 'text', 'description' (AG News)
  label_key: str = 'label'
  class_names: tuple = ()
  image_shape: tuple | None = None  # (height, width, channels); None for text

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, values: dict) -> 'DatasetInfo':
    return cls(**{**values, 'class_names': tuple(values['class_names']),
                  'image_shape': tuple(values['image_shape']) if values.get('image_shape') else None})


def dataset_info(name: str, data_dir: str | None) -> DatasetInfo:
  """The dataset's description: from a saved split's metadata (no TFDS needed), else from
  TFDS's (the prepared dataset's, or the builder code's), which must show one image or text input
  and a `ClassLabel`."""
  if data_dir is not None:
    folder = npz_splits.split_path(data_dir, name, 'any').parent
    for path in sorted(folder.glob('*.npz')) if folder.is_dir() else ():
      if 'info' in npz_splits.meta(path):
        return DatasetInfo.from_json(npz_splits.meta(path)['info'])
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise ZooError(f'{name} has no saved split with its metadata in {data_dir} and TFDS cannot be '
                   f'imported ({e}); install tensorflow-datasets or save the splits with the current '
                   'datatools.save_splits') from e
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ZooError(f'unknown dataset {name!r}: TFDS has no dataset of that name; pass a TFDS name such as '
                   'mnist, fashion_mnist, cifar10, cifar100, svhn_cropped, imdb_reviews or ag_news_subset '
                   '(or your own files: --image_folder / --text_folder)') from e
  features = builder.info.features
  keys = builder.info.supervised_keys or ()
  labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
  inputs = [k for k, f in features.items() if isinstance(f, (tfds.features.Image, tfds.features.Text))]
  input_key = keys[0] if len(keys) == 2 and isinstance(keys[0], str) else (inputs[0] if len(inputs) == 1 else None)
  label_key = keys[1] if len(keys) == 2 and isinstance(keys[1], str) else (labels[0] if len(labels) == 1 else None)
  if input_key not in inputs or label_key not in labels:
    raise ZooError(f'{name} is not an image or text classification dataset here (features: '
                   f'{", ".join(f"{k}: {type(f).__name__}" for k, f in features.items())}); pass one with an '
                   'image or text input and a ClassLabel')
  feature, label = features[input_key], features[label_key]
  if isinstance(feature, tfds.features.Image):
    return DatasetInfo(name, 'image', input_key, label_key, tuple(str(n) for n in label.names), tuple(feature.shape))
  return DatasetInfo(name, 'text', input_key, label_key, tuple(str(n) for n in label.names))


def _load_from_tfds(name: str, split: str, data_dir: str | None) -> dict[str, np.ndarray]:
  try:
    from zoo.data import tfds_source  # TensorFlow and TFDS: only needed here
  except ImportError as e:
    folder = npz_splits.split_path(data_dir or '<data_dir>', name, split).parent
    have = sorted(npz_splits.meta(p).get('split', p.stem) for p in folder.glob('*.npz')) if data_dir and folder.is_dir() else []
    raise ZooError(f'split {split!r} of {name} is not saved in {folder} (have: {", ".join(have) or "none"}) '
                   f'and TFDS cannot be read here ({e}); save it where TensorFlow is installed '
                   f'(python -m datatools.save_splits --dataset={name} --splits="{split}") '
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
  key = hashlib.sha256(json.dumps([CACHE_FORMAT_VERSION, name, split, str(root), files]).encode()).hexdigest()[:24]
  return Path(cache_dir).expanduser() / name / f'{key}.npz'
