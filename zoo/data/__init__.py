"""Datasets: a TFDS image or text classification dataset by name, or a folder of your own files.

`open_dataset(config, data_dir, workdir)` gives an `images.ImageDataset` or a `text.TextDataset`;
each offers `model_kwargs()`, `load(split)` -> ArraySplit, `describe()` (-> dataset.json),
`preprocess(inputs, noise)` (TensorFlow, for tf.data), `preprocess_on_device(inputs, noise)` (the
same in jax.numpy, for splits held on the devices), `noise_per_example` (random numbers its
augmentation draws per example; 0 for none) and `alternating_noise_columns` (those of them that
are per-run coins inverted every other epoch: `pipeline.epoch_plan`). The config is read for the
fields a dataset needs and nothing else: this layer does not import the training layer.
"""
import functools
from pathlib import Path

from zoo.data import sources

def _read_tfds(info: sources.DatasetInfo, data_dir, cache_dir: str, split: str) -> dict:
  arrays = sources.load_split(info.name, split, data_dir, cache_dir)
  return {('image' if info.kind == 'image' else 'text'): arrays[info.input_key], 'label': arrays[info.label_key]}


def _read_folder(folder, kind: str, shape, split: str) -> dict:
  from zoo.data import folders
  items = folder.select(split)
  return folders.read_images(items, shape) if kind == 'image' else folders.read_texts(items)


def _with_image_size(info: sources.DatasetInfo, image_size: int) -> sources.DatasetInfo:
  """--image_size=N: N x N images, the dataset's channels kept."""
  if not image_size:
    return info
  channels = info.image_shape[-1] if info.image_shape else 3
  return sources.DatasetInfo(**{**info.to_json(), 'image_shape': (image_size, image_size, channels)})


def dataset_info(config, data_dir) -> sources.DatasetInfo:
  """The description of the config's data: a folder's layout, or the TFDS dataset's metadata."""
  folder_path = config.image_folder or config.text_folder
  if folder_path:
    from zoo.data import folders, images
    kind = 'image' if config.image_folder else 'text'
    folder = folders.scan(folder_path, kind)
    shape = (images.FOLDER_IMAGE_SIZE, images.FOLDER_IMAGE_SIZE, 3) if kind == 'image' else None
    info = sources.DatasetInfo(Path(folder_path).expanduser().name, kind, kind, 'label', folder.class_names, shape)
  else:
    info = sources.dataset_info(config.dataset, data_dir)
  return _with_image_size(info, config.image_size) if info.kind == 'image' else info


def open_dataset(config, data_dir, workdir, info: sources.DatasetInfo | None = None):
  """The dataset the config names, described by `info` when given (a workdir's dataset.json:
  no data needs to be reachable then), else by `dataset_info`."""
  info = info or dataset_info(config, data_dir)
  folder_path = config.image_folder or config.text_folder
  if folder_path:
    from zoo.data import folders
    scanned = functools.cache(lambda: folders.scan(folder_path, info.kind))
    read_split = lambda split: _read_folder(scanned(), info.kind, info.image_shape, split)
    source = f'folder {Path(folder_path).expanduser().resolve()}'
  else:
    read_split = functools.partial(_read_tfds, info, data_dir, config.split_cache)
    source = 'tfds'
  if info.kind == 'image':
    from zoo.data import images
    return images.ImageDataset(info, read_split, augment=config.augment, crop_padding=config.crop_padding,
                               alternating_flip=config.alternating_flip, source=source)
  from zoo.data import text  # the tokenizer is plain Python: no TensorFlow for text
  return text.TextDataset(info, read_split, vocab_size=config.vocab_size, max_length=config.max_length,
                          train_split=config.train_split, workdir=workdir, source=source,
                          tokenizer_from=config.init_from or None)  # a fine-tune reads texts as its source did
