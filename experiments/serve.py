"""The demo page: `python -m experiments.serve --workdir=W [--host=127.0.0.1] [--port=8000]`.

Restores W's model (`zoo.load`), warms it up, prints the page's URL and serves until Ctrl-C or SIGTERM:
the page (choose or drop an image, or type a text) and the API, `POST /predict` with an image file's
bytes or {"text": "..."}, which answers with the fields `--mode=predict` prints (zoo/serving.py).
"""
import logging
import os
import signal

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TensorFlow, if TFDS loads it while opening the data: keep it quiet

from absl import app, flags
from absl import logging as absl_logging

from experiments import accelerators  # --accelerator, --compilation_cache, ... as every entry point has them
from zoo.errors import ZooError, exit_with

flags.DEFINE_string('workdir', None, 'The workdir of a training run (config, dataset.json, checkpoints), or a '
                    'packed model: a shipped model\'s name (cifar10/airbench), a .zoo file or its URL.')
flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 '
                    'lets every machine that reaches this one use the page.')
flags.DEFINE_integer('port', 8000, 'Port to listen on (0: any free one; the printed URL says which).')
flags.DEFINE_integer('checkpoint_step', None, 'Serve this checkpoint step instead of the latest.')
FLAGS = flags.FLAGS


def _stop_on_sigterm(signum, frame):
  raise KeyboardInterrupt  # SIGTERM ends serve_forever() the way Ctrl-C does: exit 0


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's restore chatter
  logging.getLogger('zoo').setLevel(logging.INFO)  # one line per request, as http.server logs them
  try:
    if not FLAGS.workdir:
      raise ZooError('--workdir is missing; pass the workdir of a training run (--workdir=W)')
    if not 0 <= FLAGS.port <= 65535:
      raise ZooError(f'--port={FLAGS.port} is not a port number; pass one from 1 to 65535 (0: any free one)')
    accelerators.setup()
    import zoo
    from zoo import serving
    from zoo import packed
    workdir = packed.locate(FLAGS.workdir)  # a shipped model's name, a .zoo file or URL: its folder
    trained = zoo.load(workdir, step=FLAGS.checkpoint_step)
    server = serving.make_server(trained, workdir, FLAGS.host, FLAGS.port)
  except ZooError as e:
    exit_with(e)
  signal.signal(signal.SIGTERM, _stop_on_sigterm)
  print(f'Serving {trained.config.model} on {trained.config.data_name} (step {trained.step}, the {trained.config.weights} '
        f'weights) at {server.url}  '
        '(Ctrl-C stops)', flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()


if __name__ == '__main__':
  app.run(main)
