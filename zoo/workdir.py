"""The workdir: every file a run leaves, named here and read and written only through this module.

```
<workdir>/
  config.json          every Config field and the workdir's format version: the workdir describes itself
  dataset.json         class names and input format: what zoo.load needs besides the checkpoint
  vocabulary.txt       text datasets: the tokenizer's words, most frequent first
  init_from.json       fine-tuning runs: the source's path, checkpoint step and fingerprint
  checkpoints/<step>/  orbax checkpoints (zoo/checkpoints.py); a fine-tuning run's start is step 0
  history.json         one entry per epoch; history.png, its plot
  tensorboard/         event files
  eval.json            written by --mode=eval; report/, its figures and page
  lr_find.png          written by --mode=lr_find (which writes nothing else)
```
Writes are atomic (a temporary file and a rename), so a kill or a full disk never leaves half a
file, and only process 0 writes, except where a function says otherwise. A full disk stops the run
with one line naming it (`full_disk_as_error`); what was written before stays.

config.json records `FORMAT_VERSION` (as `FORMAT_KEY`), and a workdir is opened (resumed, evaluated,
loaded, served, exported, fine-tuned from) only when it holds this zoo's version: what its files
mean is then what this code writes, so no reader needs to guess what an earlier release wrote.
`read_config` checks it, and every reader of a workdir starts there.
"""
import contextlib
import dataclasses
import errno
import json
import os
import time
from pathlib import Path
from typing import Optional

from zoo.config import Config
from zoo.errors import ZooError

CONFIG_FILE = 'config.json'
DESCRIPTION_FILE = 'dataset.json'
VOCABULARY_FILE = 'vocabulary.txt'
INIT_FROM_FILE = 'init_from.json'
CHECKPOINT_DIR = 'checkpoints'
HISTORY_FILE = 'history.json'
PLOT_FILE = 'history.png'
TENSORBOARD_DIR = 'tensorboard'
EVAL_FILE = 'eval.json'
REPORT_DIR = 'report'
LR_FIND_PLOT = 'lr_find.png'

# The workdir format this zoo writes and reads. A change to what any workdir file holds, or means,
# that this code could not read from a workdir of the previous version bumps it.
FORMAT_VERSION = 1
FORMAT_KEY = 'workdir_format'  # config.json's field holding it (no Config field has this name)

VOCABULARY_WAIT_SECONDS = 600  # far longer than learning a vocabulary from a text dataset's training split takes


_FULL_DISK_MESSAGES = tuple(os.strerror(code) for code in (errno.ENOSPC, errno.EDQUOT))


def _is_full_disk(error: BaseException) -> bool:
  """An OSError ENOSPC/EDQUOT anywhere in the chain, or the same text in another type's message
  (TensorStore, which writes orbax's arrays, raises `ValueError('RESOURCE_EXHAUSTED: ... No space
  left on device')`: measured on a full tmpfs)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if any(message in str(error) for message in _FULL_DISK_MESSAGES):
      return True
    error = error.__cause__ or error.__context__
  return False


@contextlib.contextmanager
def full_disk_as_error(path):
  """Turns a full disk while writing `path` (a file or a directory) into one ZooError line: the disk
  and the fix. Every write in the workdir is atomic, so what was saved before is intact."""
  try:
    yield
  except ZooError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if not _is_full_disk(e):
      raise
    raise ZooError(f'the disk holding {path} is full ({os.strerror(errno.ENOSPC)}), and what was saved before is '
                   'intact; free space on it and rerun the same command (training resumes from its last '
                   'checkpoint)') from e


def _write_text(path: Path, text: str) -> None:
  """Via a temporary file (named per process, so that two writers never share one) and a rename."""
  tmp = path.with_name(f'{path.name}.{os.getpid()}.tmp')
  with full_disk_as_error(path):
    try:
      path.parent.mkdir(parents=True, exist_ok=True)
      tmp.write_text(text, encoding='utf-8')
      tmp.replace(path)
    finally:
      with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)  # a write that failed half-way


def write_json(path: Path, value) -> None:
  _write_text(Path(path), json.dumps(value, indent=2) + '\n')


def _read_json(path: Path, kind: type):
  """The JSON value in `path`, which must be a `kind` (a file edited or damaged by hand is named)."""
  try:
    value = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ZooError(f'{path} is not readable JSON ({e}); restore it or use a new --workdir') from e
  if not isinstance(value, kind):
    raise ZooError(f'{path} is not what the zoo writes (a JSON {"object" if kind is dict else "list"}, not '
                   f'{type(value).__name__}); restore it or use a new --workdir')
  return value


# config.json

def read_config(workdir) -> Optional[Config]:
  """The recorded Config, or None when the workdir has none (a new run). A workdir of another
  format version (`_check_format`) is refused before anything else in it is read."""
  path = Path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  values = _read_json(path, dict)
  _check_format(workdir, values.pop(FORMAT_KEY, None))
  try:
    return Config.from_dict(values)
  except TypeError as e:
    raise ZooError(f'{path} is not a readable config ({e}); restore it or use a new --workdir') from e


def _check_format(workdir, found) -> None:
  """A workdir whose config.json records no format version (written before versions were) or
  another one was written by another release of the zoo, whose files this code does not read."""
  if found != FORMAT_VERSION:
    version = 'none' if found is None else json.dumps(found)
    raise ZooError(f'{workdir} is a workdir of format {version} and this zoo reads format {FORMAT_VERSION}; '
                   'train again in a new workdir, or use the zoo release that wrote it')


def trained_config(workdir) -> Config:
  """The recorded Config of a workdir that must hold a run (eval, predict, zoo.load, export)."""
  config = read_config(workdir)
  if config is None:
    raise ZooError(f'{workdir} has no {CONFIG_FILE}: it is not a zoo workdir; pass the workdir of a training run')
  return config


def check_resumable(config: Config, workdir) -> None:
  """A workdir that holds a run resumes only with the settings it was started with (all but the
  runtime fields). `init_from` only has to agree on whether the run is a fine-tune: its start is the
  workdir's checkpoint 0 and `init_from.json` its fingerprint, so the source's path is information,
  and a source moved, spelt otherwise or gone does not stop a resume."""
  recorded = read_config(workdir)
  if recorded is None:
    return
  if recorded.model != config.model or recorded.data_name != config.data_name:
    raise ZooError(f'{workdir} holds a {recorded.data_name}/{recorded.model} run, not '
                   f'{config.data_name}/{config.model}; pass a new --workdir for this run')
  runtime = Config.fields_with_role('runtime')
  differences = [f'{f.name}: {getattr(recorded, f.name)!r} recorded, {getattr(config, f.name)!r} asked'
                 for f in dataclasses.fields(Config)
                 if f.name not in runtime + ('init_from',) and getattr(recorded, f.name) != getattr(config, f.name)]
  if config.init_from and not recorded.init_from:
    differences.append(f'init_from: none recorded (trained from scratch), {config.init_from!r} asked')
  if differences:
    raise ZooError(f'{workdir} was started with other settings ({"; ".join(differences)}); '
                   'rerun with the recorded flags to resume, or pass a new --workdir')


def record_config(config: Config, workdir) -> None:
  """Writes config.json, with this zoo's format version, unless the workdir has one (which must then
  match: `check_resumable`)."""
  check_resumable(config, workdir)
  if read_config(workdir) is None:
    values = {**dataclasses.asdict(config), FORMAT_KEY: FORMAT_VERSION}
    _write_text(Path(workdir) / CONFIG_FILE, json.dumps(values, indent=2, sort_keys=True) + '\n')


# dataset.json

def read_description(workdir) -> Optional[dict]:
  path = Path(workdir) / DESCRIPTION_FILE
  return _read_json(path, dict) if path.exists() else None


def record_description(workdir, description: dict) -> None:
  """Class names and input format, written once when training starts."""
  if read_description(workdir) is None:
    write_json(Path(workdir) / DESCRIPTION_FILE, description)


# vocabulary.txt

def vocabulary_path(workdir) -> Path:
  return Path(workdir) / VOCABULARY_FILE


def read_vocabulary(workdir, *, wait: bool = False) -> Optional[list[str]]:
  """The recorded words, most frequent first, or None. With `wait` (processes other than 0 of a
  multi-process run), waits for process 0 to write them, so that every process tokenizes alike."""
  path = vocabulary_path(workdir)
  deadline = time.monotonic() + VOCABULARY_WAIT_SECONDS
  while wait and not path.exists():
    if time.monotonic() > deadline:
      raise ZooError(f'waited {VOCABULARY_WAIT_SECONDS} s for process 0 to write {path}; every process '
                     'needs the same --workdir on a shared file system')
    time.sleep(0.2)
  if not path.exists():
    return None
  content = path.read_bytes().decode('utf-8')  # not read_text: a word may hold a carriage return
  return content.split('\n') if content else []


def write_vocabulary(workdir, words: list[str]) -> None:
  _write_text(vocabulary_path(workdir), '\n'.join(words))


# init_from.json

def read_init_from(workdir) -> Optional[dict]:
  path = Path(workdir) / INIT_FROM_FILE
  return _read_json(path, dict) if path.exists() else None


def write_init_from(workdir, record: dict) -> None:
  write_json(Path(workdir) / INIT_FROM_FILE, record)


# history.json, history.png, eval.json, report/

def read_history(workdir) -> list[dict]:
  """One dict per epoch, each with its `epoch` number."""
  path = Path(workdir) / HISTORY_FILE
  history = _read_json(path, list) if path.exists() else []
  if not all(isinstance(entry, dict) and isinstance(entry.get('epoch'), int) for entry in history):
    raise ZooError(f'{path} is not what the zoo writes (one JSON object with an "epoch" number per epoch); '
                   'restore it or use a new --workdir')
  return history


def write_history(workdir, history: list[dict]) -> None:
  write_json(Path(workdir) / HISTORY_FILE, history)


def plot_path(workdir) -> Path:
  return Path(workdir) / PLOT_FILE


def tensorboard_dir(workdir) -> Path:
  return Path(workdir) / TENSORBOARD_DIR


def checkpoint_dir(workdir) -> Path:
  return Path(workdir).absolute() / CHECKPOINT_DIR


def read_eval(workdir) -> Optional[dict]:
  path = Path(workdir) / EVAL_FILE
  return _read_json(path, dict) if path.exists() else None


def write_eval(workdir, report: dict) -> None:
  write_json(Path(workdir) / EVAL_FILE, report)


def report_dir(workdir) -> Path:
  return Path(workdir) / REPORT_DIR


def lr_find_plot_path(workdir) -> Path:
  return Path(workdir) / LR_FIND_PLOT
