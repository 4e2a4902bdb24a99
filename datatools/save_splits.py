"""Saves TFDS splits as `.npz` files that train without TensorFlow.

  python -m datatools.save_splits --dataset=cifar10 --data_dir=DIR \
      --splits='train[:45000],train[45000:]' --out_dir=/tmp/splits [--jpeg_quality=75]

writes <out_dir>/cifar10/exported/<split>.npz; then `python -m experiments.cifar --data_dir=<out_dir>
--train_split='train[:45000]' ...` reads them with NumPy (and Pillow for JPEG) alone: the way onto a
machine with JAX but no TensorFlow. Always lossless; --jpeg_quality=75 stores JPEG plus the exact
residual, which for a CIFAR-10 copy that went through JPEG q75 makes train a sixth of its raw size
(docs/airbench.md).
"""
import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging

from zoo.errors import ZooError, exit_with

flags.DEFINE_string('dataset', 'cifar10', 'TFDS dataset to save (an image or text classification dataset).')
flags.DEFINE_list('splits', ['train', 'test'], 'Splits, TFDS slicing syntax allowed.')
flags.DEFINE_string('data_dir', None, 'TFDS data directory to read (default: $TFDS_DATA_DIR).')
flags.DEFINE_string('out_dir', None, 'Directory to write <dataset>/exported/<split>.npz into.', required=True)
flags.DEFINE_integer('jpeg_quality', 0, 'Store images as JPEG of this quality (1-95) plus the exact residual; '
                     '0: as raw uint8. Both are lossless; pick the smaller.')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.ERROR)  # TFDS's INFO lines would bury the one line per split
  try:
    if not 0 <= FLAGS.jpeg_quality <= 95:
      raise ZooError(f'--jpeg_quality={FLAGS.jpeg_quality} is out of range; pass 0 (lossless) or a quality from 1 to 95')
    from zoo.data import npz_splits, sources, tfds_source
    for split in FLAGS.splits:
      arrays = tfds_source.load_split(FLAGS.dataset, split, FLAGS.data_dir)
      path = npz_splits.split_path(FLAGS.out_dir, FLAGS.dataset, split)
      meta = {'dataset': FLAGS.dataset, 'split': split, 'source': str(FLAGS.data_dir or 'TFDS default'),
              'examples': len(next(iter(arrays.values()))),
              'info': sources.dataset_info(FLAGS.dataset, FLAGS.data_dir).to_json()}
      npz_splits.save(path, arrays, meta, jpeg_quality=FLAGS.jpeg_quality)
      print(json.dumps({**meta, 'path': str(path), 'megabytes': round(path.stat().st_size / 2**20, 1)}), flush=True)
  except ZooError as e:
    exit_with(e)


if __name__ == '__main__':
  app.run(main)
