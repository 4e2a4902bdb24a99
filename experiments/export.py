"""Exports a trained workdir's model to ONNX or a TensorFlow SavedModel (`pip install -e '.[export]'`).

  python -m experiments.export --workdir=W --format=onnx          # W/export/model.onnx
  python -m experiments.export --workdir=W --format=saved_model   # W/export/saved_model/

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

flags.DEFINE_string('workdir', None, 'Workdir of a training run.', required=True)
flags.DEFINE_enum('format', None, ['onnx', 'saved_model'], 'What to write.', required=True)
flags.DEFINE_string('output', None, 'The .onnx file or the SavedModel directory to write (must not exist); '
                    'default: <workdir>/export/model.onnx or <workdir>/export/saved_model.')
flags.DEFINE_integer('checkpoint_step', None, 'Checkpoint step to export (default: the newest readable one).')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.ERROR)
  try:
    from zoo import export
    written = export.export(FLAGS.workdir, FLAGS.format, FLAGS.output, FLAGS.checkpoint_step)
  except ZooError as e:
    exit_with(e)
  print(json.dumps({'workdir': FLAGS.workdir, 'format': FLAGS.format, 'written': [str(p) for p in written]}),
        flush=True)


if __name__ == '__main__':
  app.run(main)
