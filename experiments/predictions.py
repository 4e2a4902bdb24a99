"""`--mode=predict`: a trained workdir's model on image files or texts, one JSON line each.

Its flags (`--image`, `--text`) belong to the experiments that train image and text models.
"""
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
from absl import flags

from zoo.errors import ZooError

FLAGS = flags.FLAGS

flags.DEFINE_multi_string('text', None, '--mode=predict, text models: a text to classify (repeatable); '
                          'without it, one text per line from stdin.')
flags.DEFINE_multi_string('image', None, '--mode=predict, image models: an image file to classify, any '
                          'format and size Pillow opens (repeatable); without it, one path per line from stdin.')


def _inputs_from_stdin(flag: str, what: str, decode) -> list[str]:
  """One input per non-empty line of standard input (any line ending), its bytes decoded by `decode`;
  a terminal there gets a hint, not a wait."""
  if sys.stdin is None or sys.stdin.isatty():
    raise ZooError(f'--mode=predict needs {what}; pass {flag} (repeatable) or pipe them, one per line, '
                   'on standard input')
  text = decode(sys.stdin.buffer.read())
  return [line.rstrip('\n') for line in io.StringIO(text, newline=None) if line.strip()]


def _utf8_text(data: bytes) -> str:
  """Texts are UTF-8, as the vocabulary is: other bytes are named, not guessed at."""
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError as e:
    line = data.count(b'\n', 0, e.start) + 1
    raise ZooError(f'standard input is not UTF-8: line {line} has the byte {data[e.start:e.start + 1]!r} '
                   f'({e.reason}); pass UTF-8 text (iconv -f LATIN1 -t UTF-8 converts Latin-1)') from None


def predict(workdir: Path, step: int | None) -> None:
  """One JSON line per image or text, in the order given. Each image that cannot be read (missing,
  not an image, over Pillow's pixel limit) gets its own `error:` line on stderr after every readable
  one is printed, and the exit status is then 1."""
  import zoo
  from zoo import inference
  trained = zoo.load(workdir, step=step)
  names = trained.class_names
  if trained.kind == 'text':
    if FLAGS.image:
      raise ZooError(f'--image: {workdir} holds a text model ({trained.config.data_name}); pass --text instead')
    texts = FLAGS.text or _inputs_from_stdin('--text="..."', 'texts', _utf8_text)
    for text, p in zip(texts, trained.predict(texts)):
      print(json.dumps({'text': text, **inference.prediction_fields(names, p)}), flush=True)
    return
  if FLAGS.text:
    raise ZooError(f'--text: {workdir} holds an image model ({trained.config.data_name}); pass --image instead')
  # File names are bytes to the system: any of them round-trips through os.fsdecode.
  paths = FLAGS.image or _inputs_from_stdin('--image=FILE', 'image files', os.fsdecode)
  readable, images, failures = [], [], []
  for path in paths:
    try:
      images.append(inference.read_image(path, trained.input_shape))
      readable.append(path)
    except ZooError as e:
      failures.append(e)
  if images:
    for path, p in zip(readable, trained.predict(np.stack(images))):
      print(json.dumps({'image': path, **inference.prediction_fields(names, p)}), flush=True)
  if failures:
    for error in failures[:-1]:
      print(f'error: {error}', file=sys.stderr, flush=True)
    raise failures[-1]
