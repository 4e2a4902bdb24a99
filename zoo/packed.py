"""A trained model as one folder or one file: what the zoo ships, and what users share.

A **packed model** is a folder holding what `zoo.load` needs and nothing else, with the same file
names as a workdir: `config.json`, `dataset.json`, `vocabulary.txt` (text), `eval.json` and
`MODEL_CARD.md` when the run has them, the variables of one checkpoint as `weights.safetensors`
(`params/...` and `batch_stats/...` arrays; float32, or float16 to halve the size), and
`manifest.json`, the sha256 of every file, checked on every load. It loads without pickle, orbax or
the training code's checkpoint layout, so every command that reads a trained workdir reads it too.

A `.zoo` file is such a folder zipped (`pack`), to copy or put on a web server. `locate` turns what a
user names into a folder: a workdir or packed folder as it is; a `.zoo` file, or an `http://`,
`https://` or `file://` URL of one (optionally `URL#sha256=<hex>`), unpacked once into
`$XDG_CACHE_HOME/zoo/models/` (pooch downloads, with a progress bar, and checks hashes); or the name
of a model shipped inside the package (`cifar10/airbench`: `list_trained()`).
"""
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import urllib.parse
import zipfile
import zlib
from pathlib import Path

import numpy as np

from zoo import cache_dirs
from zoo import workdir as workdir_lib
from zoo.errors import ZooError

MANIFEST_FILE = 'manifest.json'
WEIGHTS_FILE = 'weights.safetensors'
CARD_FILE = 'MODEL_CARD.md'
FORMAT = 'zoo-packed'
FORMAT_VERSION = 1
DTYPES = ('float32', 'float16')
SUFFIX = '.zoo'
SHIPPED = Path(__file__).resolve().parent / 'trained'  # <dataset>/<model>/ packed folders in the package


def is_packed(folder) -> bool:
  return (Path(folder) / MANIFEST_FILE).is_file()


def _sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def _flatten(tree: dict, prefix: str = '') -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}/'))
    else:
      flat[f'{prefix}{key}'] = np.asarray(value)
  return flat


def _unflatten(flat: dict) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    *parents, leaf = path.split('/')
    node = tree
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = value
  return tree


def write_folder(workdir, folder, step: int | None = None, dtype: str = 'float32', card: str | None = None) -> Path:
  """Packs checkpoint `step` (default: the newest readable) of `workdir` into the new folder
  `folder`: its files, the variables as `dtype`, `card` as MODEL_CARD.md, and the manifest."""
  from zoo import checkpoints  # orbax, only to read a workdir's checkpoint
  from safetensors.numpy import save_file
  if dtype not in DTYPES:
    raise ZooError(f'dtype={dtype!r} is not one of {", ".join(DTYPES)}; pass float32 or float16')
  workdir, folder = Path(workdir), Path(folder)
  workdir_lib.trained_config(workdir)  # a zoo workdir of this zoo's format, or one error line
  if workdir_lib.read_description(workdir) is None:
    raise ZooError(f'{workdir} has no {workdir_lib.DESCRIPTION_FILE}; pass the workdir of a finished training run')
  step, tree = checkpoints.restore_arrays(workdir, step)
  folder.mkdir(parents=True)
  for name in (workdir_lib.CONFIG_FILE, workdir_lib.DESCRIPTION_FILE, workdir_lib.VOCABULARY_FILE,
               workdir_lib.EVAL_FILE, CARD_FILE):
    if (workdir / name).is_file():
      shutil.copyfile(workdir / name, folder / name)
  if card is not None:
    (folder / CARD_FILE).write_text(card)
  arrays = _flatten(checkpoints.model_variables(tree))  # a run's moving average, if it kept one
  save_file({k: v.astype(dtype) if v.dtype.kind == 'f' else v for k, v in arrays.items()}, str(folder / WEIGHTS_FILE))
  files = {path.name: _sha256(path) for path in sorted(folder.iterdir())}
  manifest = {'format': FORMAT, 'version': FORMAT_VERSION, 'step': int(step), 'dtype': dtype, 'files': files}
  (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + '\n')
  return folder


def pack(workdir, output, step: int | None = None, dtype: str = 'float32') -> Path:
  """`workdir`'s checkpoint as one `.zoo` file at `output`, written whole or not at all."""
  output = Path(output)
  if output.exists():
    raise ZooError(f'{output} exists; pass another --output or remove it')
  output.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=output.parent, prefix='.packing-') as scratch:
    if is_packed(workdir):  # a packed folder (a shipped model) is zipped as it is
      read_manifest(workdir)
      if step not in (None, read_arrays(workdir)[0]) or dtype != 'float32':
        raise ZooError(f'{workdir} is packed already (one step, its own dtype); drop --checkpoint_step and --dtype')
      folder = Path(workdir)
    else:
      folder = write_folder(workdir, Path(scratch) / 'model', step, dtype)
    partial = Path(scratch) / output.name
    with zipfile.ZipFile(partial, 'w', zipfile.ZIP_DEFLATED) as archive:
      for path in sorted(folder.iterdir()):
        archive.write(path, path.name)
    os.replace(partial, output)
  return output


def read_manifest(folder) -> dict:
  """The manifest of a packed folder, with every file checked against its sha256."""
  folder = Path(folder)
  try:
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    files = manifest['files']
    assert manifest.get('format') == FORMAT and isinstance(files, dict)
  except (OSError, ValueError, KeyError, TypeError, AssertionError):
    raise ZooError(f'{folder / MANIFEST_FILE} is not a packed model\'s manifest; reinstall or download the model '
                   'again') from None
  if manifest.get('version') != FORMAT_VERSION:
    raise ZooError(f'{folder} is a packed model of format {manifest.get("version")} and this zoo reads format '
                   f'{FORMAT_VERSION}; use the zoo release that wrote it, or pack the workdir again')
  for name, expected in files.items():
    path = folder / name
    if not path.is_file():
      raise ZooError(f'{path} is missing from the packed model; reinstall or download the model again')
    if _sha256(path) != expected:
      raise ZooError(f'{path} is damaged (its sha256 is not the manifest\'s); reinstall or download the model again')
  return manifest


def read_arrays(folder) -> tuple[int, dict]:
  """(step, {'params': ..., 'batch_stats'?: ...}) of a packed folder, as float32 host arrays."""
  from safetensors.numpy import load_file
  manifest = read_manifest(folder)
  flat = load_file(str(Path(folder) / WEIGHTS_FILE))
  flat = {k: v.astype(np.float32) if v.dtype.kind == 'f' else v for k, v in flat.items()}
  return manifest['step'], _unflatten(flat)


@dataclasses.dataclass(frozen=True)
class Shipped:
  """A model inside the package, as `list_trained` shows it."""
  name: str
  task: str
  classes: list
  accuracy: float | None
  parameters: int
  megabytes: float


def list_trained() -> list[Shipped]:
  """The models shipped inside the package: name (`<dataset>/<model>`), task, classes, validation
  accuracy (its eval.json), parameters and size on disk."""
  found = []
  for manifest in sorted(SHIPPED.glob(f'*/*/{MANIFEST_FILE}')):
    folder = manifest.parent
    description = json.loads((folder / workdir_lib.DESCRIPTION_FILE).read_text())
    evaluation = json.loads((folder / workdir_lib.EVAL_FILE).read_text()) if (folder / workdir_lib.EVAL_FILE).is_file() else {}
    from safetensors import safe_open
    with safe_open(str(folder / WEIGHTS_FILE), 'numpy') as weights:
      parameters = sum(int(np.prod(weights.get_slice(k).get_shape())) for k in weights.keys() if k.startswith('params/'))
    found.append(Shipped(f'{folder.parent.name}/{folder.name}', f'{description["inputs"]["kind"]} classification',
                         list(description['class_names']), evaluation.get('accuracy'), parameters,
                         round(sum(p.stat().st_size for p in folder.iterdir()) / 2 ** 20, 2)))
  return found


def _models_cache() -> Path:
  return Path(cache_dirs.default_dir('models')).expanduser()


def _safe_members(archive: zipfile.ZipFile, source: str) -> list[str]:
  names = archive.namelist()
  for name in names:
    if name != Path(name).name or name in ('', '.', '..') or '\\' in name:
      raise ZooError(f'{source} holds the member {name!r}, outside its folder; it is not a zoo archive: ask its '
                     'author for a file that `experiments.export --format=zoo` wrote')
  if MANIFEST_FILE not in names:
    raise ZooError(f'{source} has no {MANIFEST_FILE}; it is not a zoo archive: pass a file that '
                   '`experiments.export --format=zoo` wrote')
  return names


def unpack(archive_path, source: str | None = None) -> Path:
  """The folder of a `.zoo` file, unpacked once into the models cache (keyed by the file's sha256)
  and checked; an unpack that fails leaves nothing there."""
  archive_path = Path(archive_path)
  source = source or str(archive_path)
  key = _sha256(archive_path)
  folder = _models_cache() / key[:32]
  if folder.is_dir():
    read_manifest(folder)
    return folder
  folder.parent.mkdir(parents=True, exist_ok=True)
  scratch = Path(tempfile.mkdtemp(dir=folder.parent, prefix='.unpacking-'))
  try:
    try:
      with zipfile.ZipFile(archive_path) as archive:
        for name in _safe_members(archive, source):
          (scratch / name).write_bytes(archive.read(name))
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
      raise ZooError(f'{source} is not a zoo archive, or it was cut short ({error}); download it again or pass '
                     'a file that `experiments.export --format=zoo` wrote') from None
    read_manifest(scratch)
    os.replace(scratch, folder)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  return folder


def _download(url: str) -> Path:
  """The archive at `url` (http/https), downloaded once into the models cache by pooch; with
  `#sha256=<hex>` checked against it. Any failure leaves nothing in the cache."""
  import pooch
  import requests
  address, _, fragment = url.partition('#')
  known = None
  if fragment:
    if not fragment.startswith('sha256=') or len(fragment) != 71:
      raise ZooError(f'{url}: the fragment {fragment!r} is not sha256=<64 hex digits>; write URL#sha256=<hex> '
                     'or leave it out')
    known = f'sha256:{fragment[7:].lower()}'
  downloads = _models_cache() / 'downloads'
  name = hashlib.sha256(address.encode()).hexdigest()[:32] + SUFFIX
  try:
    path = pooch.retrieve(address, known_hash=known, fname=name, path=downloads, progressbar=True)
  except requests.exceptions.HTTPError as error:
    raise ZooError(f'{address} could not be downloaded ({error}); check the URL') from None
  except requests.exceptions.RequestException as error:
    raise ZooError(f'{address} could not be reached ({type(error).__name__}); check the network, or pass the '
                   'path of a downloaded .zoo file') from None
  except ValueError as error:  # pooch: the downloaded file's hash is not the known one
    (downloads / name).unlink(missing_ok=True)
    raise ZooError(f'{address}: {error}; check the sha256 in the URL, or download the file again') from None
  try:
    return unpack(path, address)
  except ZooError:
    Path(path).unlink(missing_ok=True)  # a damaged download is not kept for the next try
    raise


def locate(source) -> Path:
  """The folder of what a user names as a trained model: a workdir or packed folder, a `.zoo` file,
  its URL (http, https, file), or a shipped model's name (`<dataset>/<model>`)."""
  text = str(source)
  scheme = urllib.parse.urlparse(text).scheme
  if scheme in ('http', 'https'):
    return _download(text)
  if scheme == 'file':
    return unpack(Path(urllib.parse.unquote(urllib.parse.urlparse(text).path)), text)
  path = Path(text).expanduser()
  if path.is_dir():
    if is_packed(path):
      read_manifest(path)
    return path
  if path.is_file():
    return unpack(path)
  shipped = SHIPPED / text
  if text.count('/') == 1 and '..' not in text and is_packed(shipped):
    read_manifest(shipped)
    return shipped
  names = ', '.join(model.name for model in list_trained()) or 'none in this installation'
  raise ZooError(f'{text} is neither a workdir, a .zoo file, a URL nor a shipped model\'s name; pass one '
                 f'(shipped models: {names})')
