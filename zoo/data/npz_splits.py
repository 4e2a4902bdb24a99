"""TFDS splits saved as one `.npz` file each, readable with NumPy alone.

Why: a machine with JAX but no TensorFlow (a rented GPU box, a laptop without TF's 600 MB) can still
train on the device feed. `python -m datatools.save_splits` writes
`<out_dir>/<dataset>/exported/<split>.npz`; `--data_dir=<out_dir>` then finds it before TFDS.
With `jpeg_quality`, images are stored as JPEG plus the exact residual (int16, mostly zeros), so
the file stays lossless; images that were themselves JPEG'd at that quality (the CIFAR-10 copy the
docs measure: quality 75, 4:2:0) leave a residual of mostly zeros, which compresses to little
(sizes: docs/airbench.md). A SHA-256 of the images checks the decode.
"""
import contextlib
import hashlib
import io
import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from zoo.errors import ZooError

# The folder's name predates this module's; it stays so that splits saved earlier are still found.
FOLDER = 'exported'


def split_path(data_dir, name: str, split: str) -> Path:
  """`train[:45000]` -> <data_dir>/<name>/exported/train__45000_.npz (the file's meta keeps the split)."""
  return Path(data_dir) / name / FOLDER / (re.sub(r'[^A-Za-z0-9_.-]', '_', split) + '.npz')


def save(path, arrays: dict[str, np.ndarray], meta: dict, jpeg_quality: int = 0, compress: bool = True) -> Path:
  """Writes every feature of a split; with `jpeg_quality`, uint8 images as JPEG (4:2:0 chroma) plus
  the residual. `compress=False` trades disk for load time (a cache)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  stored = {}
  for key, values in arrays.items():
    if jpeg_quality and values.dtype == np.uint8 and values.ndim == 4:
      blobs = _jpeg(values, jpeg_quality)
      stored[f'{key}.jpeg'], stored[f'{key}.jpeg_offsets'] = _concatenate(blobs)
      stored[f'{key}.jpeg_residual'] = values.astype(np.int16) - _decode(blobs)
      meta = {**meta, f'{key}_encoding': f'jpeg quality {jpeg_quality} 4:2:0 + residual (lossless)',
              f'{key}_sha256': _sha256(values)}
    elif values.dtype == object:  # variable-length bytes (text): concatenated, with offsets
      stored[f'{key}.bytes'], stored[f'{key}.bytes_offsets'] = _concatenate(values)
    else:
      stored[key] = values
  if jpeg_quality:
    from PIL import __version__ as pillow
    meta = {**meta, 'pillow': pillow}
  stored['meta'] = np.array(json.dumps(meta))
  tmp = path.with_name(f'{path.name}.{os.getpid()}.tmp.npz')  # processes of one run may write at once
  (np.savez_compressed if compress else np.savez)(tmp, **stored)
  tmp.replace(path)  # a reader never sees half a file
  return path


@contextlib.contextmanager
def _opened(path):
  """The archive `save` wrote, or one line naming a file that is not a whole saved split: cut
  short, not a zip, or a stray `.npz` that something else wrote."""
  try:
    with np.load(path, allow_pickle=False) as stored:
      yield stored
  except ZooError:
    raise
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    raise ZooError(f'{path} is not a readable saved split ({type(e).__name__}: {str(e)[:200]}); save the split '
                   'again (python -m datatools.save_splits) or move the file out of that folder') from None


def load(path) -> dict[str, np.ndarray]:
  """The arrays `save` wrote, exactly as TFDS gave them."""
  with _opened(path) as stored:
    meta = json.loads(str(stored['meta']))
    arrays = {}
    for key in sorted(stored.files):
      if key.endswith('.jpeg'):
        name = key[:-5]
        decoded = _decode(_split(stored[key], stored[key + '_offsets'])) + stored[key + '_residual']
        arrays[name] = decoded.astype(np.uint8)
        if _sha256(arrays[name]) != meta.get(f'{name}_sha256'):
          from PIL import __version__ as pillow
          raise ZooError(f'{path}: the decoded {name}s differ from those saved (this Pillow {pillow} decodes '
                         f'JPEG differently from the saver\'s {meta.get("pillow")}); save without --jpeg_quality')
      elif key.endswith('.bytes'):
        arrays[key[:-6]] = np.array(_split(stored[key], stored[key + '_offsets']), dtype=object)
      elif key != 'meta' and not key.endswith(('_offsets', '_residual')):
        arrays[key] = stored[key]
    return arrays


def meta(path) -> dict:
  with _opened(path) as stored:
    return json.loads(str(stored['meta']))


def _jpeg(images: np.ndarray, quality: int) -> list[bytes]:
  from PIL import Image
  out = []
  for image in images:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, 'JPEG', quality=quality, subsampling=2)
    out.append(buffer.getvalue())
  return out


def _decode(blobs: list[bytes]) -> np.ndarray:
  from PIL import Image
  return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert('RGB')) for b in blobs])


def _sha256(values: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()


def _concatenate(blobs) -> tuple[np.ndarray, np.ndarray]:
  blobs = [bytes(b) for b in blobs]
  offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
  return np.frombuffer(b''.join(blobs), np.uint8), offsets


def _split(data: np.ndarray, offsets: np.ndarray) -> list[bytes]:
  raw = data.tobytes()
  return [raw[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
