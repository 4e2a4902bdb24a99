"""Exports a trained workdir's model to ONNX or a TensorFlow SavedModel (`pip install -e '.[export]'`),
or packs it as one `.zoo` file that `zoo.load` and every --workdir take (on another machine, or
from a web server as a URL).

  python -m experiments.export --workdir=W --format=onnx          # W/export/model.onnx
  python -m experiments.export --workdir=W --format=saved_model   # W/export/saved_model/
  python -m experiments.export --workdir=W --format=zoo [--dtype=float16]   # W/export/model.zoo

The exported model takes uint8 images [N, H, W, C] at the training size (text: raw strings for the
SavedModel, int32 token ids [N, max_length] for ONNX, with `model.vocabulary.txt` beside it) and
gives float32 class probabilities [N, classes], as `zoo.load(W).predict` does; the class names
travel with it (`zoo/export.py`). Prints one JSON line naming the files written.
"""
import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging

from zoo.errors import ZooError, exit_with

flags.DEFINE_string('workdir', None, 'Workdir of a training run, or a packed model (a shipped model\'s name, a .zoo '
                    'file or its URL).', required=True)
flags.DEFINE_enum('format', None, ['onnx', 'saved_model', 'zoo'], 'What to write.', required=True)
flags.DEFINE_string('output', None, 'The .onnx file, SavedModel directory or .zoo file to write (must not exist); '
                    'default: <workdir>/export/model.onnx, saved_model or model.zoo (./export/... for a packed '
                    'model).')
flags.DEFINE_enum('dtype', 'float32', ['float32', 'float16'], '--format=zoo: the variables\' type in the file '
                  '(float16: half the size, predictions within float16 rounding).')
flags.DEFINE_integer('checkpoint_step', None, 'Checkpoint step to export (default: the newest readable one).')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.ERROR)
  try:
    from zoo import export, packed
    from zoo import workdir as workdir_lib
    written = export.export(FLAGS.workdir, FLAGS.format, FLAGS.output, FLAGS.checkpoint_step, FLAGS.dtype)
    weights = workdir_lib.trained_config(packed.locate(FLAGS.workdir)).weights
  except ZooError as e:
    exit_with(e)
  print(json.dumps({'workdir': FLAGS.workdir, 'format': FLAGS.format, 'written': [str(p) for p in written],
                    'weights': weights}), flush=True)


if __name__ == '__main__':
  app.run(main)
