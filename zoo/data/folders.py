"""Your own labelled files: `DIR/<split>/<class name>/<file>`, the layout of TFDS's `ImageFolder`
and Keras' `image_dataset_from_directory` / `text_dataset_from_directory` (and of aclImdb).

Class names are the class folders' names, sorted; a split is a subfolder, and TFDS's slicing
syntax works on it (`train[:90%]`, `train[10:20]+test`), over the split's files in an order
shuffled once with a fixed seed, so that a slice holds every class. Files are only read: nothing
is ever written into the folder.
"""
import concurrent.futures
import dataclasses
import os
import types
from pathlib import Path

import numpy as np

from zoo.errors import ZooError

SHUFFLE_SEED = 0  # the fixed order slices are taken in: the same files on every run and process


@dataclasses.dataclass(frozen=True)
class Folder:
  """The files of every split of `root` and the class names, checked for the layout's mistakes."""
  root: Path
  class_names: tuple[str, ...]
  files: dict  # split -> list of (path, label index), shuffled with SHUFFLE_SEED

  def select(self, spec: str) -> list[tuple[Path, int]]:
    """The files of a split in TFDS slicing syntax."""
    import tensorflow_datasets as tfds
    try:
      instructions = tfds.core.ReadInstruction.from_spec(spec).to_absolute(
          {split: types.SimpleNamespace(num_examples=len(files)) for split, files in self.files.items()})
    except (ValueError, KeyError, AssertionError) as e:
      raise ZooError(f'split {spec!r} cannot be read from {self.root} ({str(e).splitlines()[0]}); available '
                     f'splits (its subfolders): {", ".join(sorted(self.files))}; slices such as '
                     '"train[:90%]" work') from e
    selected = [item for i in instructions for item in self.files[i.splitname][i.from_:i.to]]
    if not selected:
      raise ZooError(f'split {spec!r} of {self.root} selects no file; pass a larger slice')
    return selected


def _visible(path: Path) -> list[Path]:
  return sorted(p for p in path.iterdir() if not p.name.startswith('.'))


def scan(root, kind: str) -> Folder:
  """Reads the layout of `root` (`kind`: 'image' or 'text', for the messages and the file filter)."""
  root = Path(root).expanduser()
  example = f'{root}/train/<class name>/<{kind} file>'
  if not root.is_dir():
    raise ZooError(f'--{kind}_folder={root} is not a directory; pass a folder laid out as {example}')
  splits = [p for p in _visible(root) if p.is_dir()]
  if not splits:
    raise ZooError(f'{root} has no split subfolders; lay the files out as {example} (and test/...)')
  classes = {}
  for split in splits:
    names = tuple(p.name for p in _visible(split) if p.is_dir())
    if len(names) < 2:
      raise ZooError(f'{split} has {len(names)} class folder{"s" if len(names) != 1 else ""} '
                     f'({", ".join(names) or "none"}); a classifier needs at least two: add a folder per class')
    classes[split.name] = names
  first = splits[0].name
  for split, names in classes.items():
    if names != classes[first]:
      missing = sorted(set(classes[first]) ^ set(names))
      raise ZooError(f'the splits of {root} have different classes ({first}: {len(classes[first])}, {split}: '
                     f'{len(names)}; not in both: {", ".join(missing[:5])}); give every split the same class folders')
  class_names = classes[first]
  rng = np.random.default_rng(SHUFFLE_SEED)
  files = {}
  for split in splits:
    items = []
    for label, name in enumerate(class_names):
      in_class = [p for p in _visible(split / name) if p.is_file() and (kind != 'text' or p.suffix == '.txt')]
      if not in_class:
        raise ZooError(f'{split / name} holds no {"*.txt " if kind == "text" else ""}files; add examples of '
                       f'{name!r} or remove the folder from every split')
      items.extend((path, label) for path in in_class)
    files[split.name] = [items[i] for i in rng.permutation(len(items))]
  return Folder(root, class_names, files)


def read_images(items: list[tuple[Path, int]], shape) -> dict[str, np.ndarray]:
  """Every image as uint8 [N, height, width, channels] (converted and resized as `images.to_array`
  does), on two threads: Pillow decodes without holding the GIL."""
  from zoo.data import images

  def read(item):
    return images.to_array(images.open_image(item[0]), shape)

  with concurrent.futures.ThreadPoolExecutor(min(2, os.cpu_count() or 1)) as pool:
    arrays = list(pool.map(read, items))
  return {'image': np.stack(arrays), 'label': np.array([label for _, label in items], np.int64)}


def read_texts(items: list[tuple[Path, int]]) -> dict[str, np.ndarray]:
  """Every text file as UTF-8 bytes (as TFDS gives its text features)."""
  texts = []
  for path, _ in items:
    try:
      data = path.read_bytes()
      data.decode('utf-8')
    except (OSError, UnicodeDecodeError) as e:
      raise ZooError(f'{path} cannot be read as UTF-8 text ({type(e).__name__}: {e}); re-encode it as UTF-8 '
                     'or remove it') from e
    texts.append(data)
  return {'text': np.array(texts, dtype=object), 'label': np.array([label for _, label in items], np.int64)}
