"""Writes a TFDS split as a folder of files, one subfolder per class: the layout `--image_folder`
and `--text_folder` read (and Keras' `image_dataset_from_directory` / `text_dataset_from_directory`).

  python -m datatools.split_to_folder --dataset=cifar10 --data_dir=DIR --split='train[:20000]' \\
    --out=folders/cifar10/train
  python -m datatools.split_to_folder --dataset=imdb_reviews --data_dir=DIR --split='train[22500:]' \\
    --out=folders/imdb/test

Images become `<out>/<class name>/<index>.png` (lossless), texts `<out>/<class name>/<index>.txt`
(UTF-8). Prints one JSON line: the folder, the example count and the class counts. A folder of
your own files in this layout trains with `python -m experiments.images --image_folder=...`.
"""
import json
import os
from pathlib import Path

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging

from zoo.errors import ZooError, exit_with

flags.DEFINE_string('dataset', 'cifar10', 'TFDS image or text classification dataset to write out.')
flags.DEFINE_string('split', 'train', 'Split to write out, TFDS slicing syntax allowed.')
flags.DEFINE_string('data_dir', None, 'TFDS data directory to read (default: $TFDS_DATA_DIR).')
flags.DEFINE_string('out', None, 'Folder to write <class name>/<index>.<png|txt> into (must not exist yet).',
                    required=True)
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.ERROR)
  try:
    from zoo.data import sources
    out = Path(FLAGS.out)
    if out.exists():
      raise ZooError(f'--out={out} exists already; pass a new folder (nothing is overwritten)')
    info = sources.dataset_info(FLAGS.dataset, FLAGS.data_dir)
    arrays = sources.load_split(FLAGS.dataset, FLAGS.split, FLAGS.data_dir)
    inputs, labels = arrays[info.input_key], arrays[info.label_key]
    names = [name.replace('/', '_') for name in info.class_names]  # 'Sci/Tech' is a folder name too
    for name in names:
      (out / name).mkdir(parents=True)
    if info.kind == 'image':
      from PIL import Image
      for i, (image, label) in enumerate(zip(inputs, labels)):
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(out / names[label] / f'{i:06d}.png')
    else:
      for i, (text, label) in enumerate(zip(inputs, labels)):
        (out / names[label] / f'{i:06d}.txt').write_bytes(text)
    counts = {name: int((labels == k).sum()) for k, name in enumerate(names)}
    print(json.dumps({'folder': str(out), 'examples': len(labels), 'classes': counts}), flush=True)
  except ZooError as e:
    exit_with(e)


if __name__ == '__main__':
  app.run(main)
