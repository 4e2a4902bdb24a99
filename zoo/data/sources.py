"""Where a split's arrays come from: an exported `.npz` in `data_dir` if there is one, else TFDS."""
import numpy as np

from zoo.data import exported
from zoo.errors import ZooError


def load_split(name: str, split: str, data_dir: str | None) -> dict[str, np.ndarray]:
  path = exported.split_path(data_dir, name, split) if data_dir is not None else None
  if path is not None and path.exists():
    if exported.meta(path).get('split') != split:
      raise ZooError(f'{path} holds split {exported.meta(path).get("split")!r}, not {split!r} (their file names '
                     'collide); export one of them to another --out_dir')
    return exported.load(path)
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
