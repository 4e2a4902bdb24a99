"""Shared helpers: run an experiment's CLI in a subprocess with N simulated CPU devices, or train
as it does in this process; every cache in a temporary folder."""
import atexit
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _caches_in_a_temporary_folder() -> None:
  """Points every cache that the code under test keeps at one folder per test run, so that
  tests never write into the home directory: XDG_CACHE_HOME holds the zoo's compiled programs
  and decoded splits (their flags' defaults read it: zoo/cache_dirs.py) and matplotlib's font
  cache, MPLCONFIGDIR matplotlib's settings, KERAS_HOME the keras.json that Keras writes when
  first imported. Named variables rather than a new HOME: they say which writes there are, and a
  new one shows up in test_runs_write_nothing_into_the_home_directory instead of being hidden.
  Run on import, before any test module imports zoo; pytest-xdist's workers inherit the main
  process's environment, so they share its folder (and one another's compiled programs)."""
  if 'PYTEST_XDIST_WORKER' in os.environ:
    return
  root = Path(tempfile.mkdtemp(prefix='zoo-tests-'))
  os.environ.update(XDG_CACHE_HOME=str(root / 'cache'), MPLCONFIGDIR=str(root / 'matplotlib'),
                    KERAS_HOME=str(root / 'keras'))
  atexit.register(shutil.rmtree, root, ignore_errors=True)


_caches_in_a_temporary_folder()


def _compilation_cache_in_this_process_too() -> None:
  """The experiments' default `--compilation_cache` (experiments/accelerators.py), also for what the
  tests train and evaluate in their own process: a model compiled by a command-line run is then
  loaded instead of compiled again, and the other way round, across every worker of the run."""
  import jax
  from zoo import cache_dirs
  jax.config.update('jax_compilation_cache_dir', os.path.expanduser(cache_dirs.default_dir('jax_compilation')))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


_compilation_cache_in_this_process_too()


def pytest_collection_modifyitems(items):
  """The tests marked `slow` (each half a minute or more) first, the rest in their usual order:
  pytest-xdist hands tests out in this order (`pytest_configure`), so the long ones start together
  instead of ending the run alone on one worker while the others wait."""
  items.sort(key=lambda item: item.get_closest_marker('slow') is None)


def pytest_configure(config):
  """`--dist loadfile` hands out files in the order of their first test (above), not, as
  pytest-xdist does by default, most tests first, which put the one-test files of the slowest
  tests (devices, preemption) last."""
  if hasattr(config.option, 'loadscopereorder'):
    config.option.loadscopereorder = False


def run_experiment(experiment: str, *flags: str, devices: int = 1, mock: bool = True,
                   examples: int = 96, timeout: int = 300, env: dict | None = None,
                   cwd: Path = ROOT) -> subprocess.CompletedProcess:
  """`python -m experiments.<experiment> flags...` (on mock data unless mock=False), with `env`
  added to the environment, in `cwd` (the repository by default)."""
  env = {**os.environ, 'JAX_NUM_CPU_DEVICES': str(devices), 'JAX_PLATFORMS': 'cpu',
         'MOCK_EXAMPLES': str(examples), 'TF_CPP_MIN_LOG_LEVEL': '2', **(env or {})}
  env.pop('XLA_FLAGS', None)
  command = ([sys.executable, str(ROOT / 'tests' / 'mock_experiment.py'), experiment] if mock
             else [sys.executable, '-m', f'experiments.{experiment}'])
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(ROOT), env.get('PYTHONPATH')]))
  return subprocess.run(command + list(flags), cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=timeout)


# The defaults of each experiment (experiments/images.py and texts.py read these recipes); the
# experiment modules themselves define their flags on absl's global FLAGS, which two of them cannot share.
EXPERIMENT_DEFAULTS = {'cifar': 'cifar_seed', 'images': 'cifar_seed', 'imdb': 'imdb_ngram', 'texts': 'imdb_ngram'}


@contextlib.contextmanager
def mock_data(examples: int = 96):
  """The data `tests/mock_experiment.py` gives a command-line run (`tfds.testing.mock_data` is
  deterministic), for code run in this process."""
  import tensorflow_datasets as tfds
  from zoo.data import sources, tfds_source
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(tfds_source, '_online', lambda: True)  # mock_data replaces the download itself
    patch.setattr(sources, '_cache_path', lambda *args: None)  # mock examples are never cached
    with tfds.testing.mock_data(num_examples=examples):
      yield


def config_of(experiment: str, *flags: str):
  """The Config and workdir that `python -m experiments.<experiment> flags...` trains, parsed as
  its command line parses them."""
  from absl import flags as absl_flags
  from experiments import launch
  flag_values = absl_flags.FlagValues()
  launch.define_flags(launch.read_recipe(launch.RECIPES / f'{EXPERIMENT_DEFAULTS[experiment]}.flags'), flag_values)
  flag_values([experiment, *flags])
  return launch.config_from_flags(flag_values), Path(flag_values.workdir), flag_values.data_dir


class _Lines(logging.Handler):
  def __init__(self):
    super().__init__(logging.INFO)
    self.lines = []

  def emit(self, record):
    self.lines.append(record.getMessage())


def train_in_process(experiment: str, *flags: str, examples: int = 96, mock: bool = True) -> tuple[list, str]:
  """What `run_experiment(experiment, *flags)` trains, on this process's one device and without
  the start of a new Python (the command line's own behaviour is tested through `run_experiment`):
  `loop.train_and_evaluate` on the same Config and data. Returns the history and the zoo's log
  lines (what the command line prints on stderr), joined."""
  import jax
  from zoo.training import loop
  # Tests compare these runs with runs on 2 or 4 devices: one device here, whatever the environment says.
  assert jax.device_count() == 1, f'the test process has {jax.device_count()} devices; unset JAX_NUM_CPU_DEVICES'
  config, workdir, data_dir = config_of(experiment, *flags)
  logger, lines = logging.getLogger('zoo'), _Lines()
  level = logger.level
  logger.setLevel(logging.INFO)
  logger.addHandler(lines)
  try:
    with mock_data(examples) if mock else contextlib.nullcontext():
      history = loop.train_and_evaluate(config, workdir, data_dir)
  finally:
    logger.removeHandler(lines)
    logger.setLevel(level)
  return history, '\n'.join(lines.lines)


def last_json_line(stdout: str) -> dict:
  return json.loads(stdout.strip().splitlines()[-1])


def in_ci() -> bool:
  """CI=true (any case), as `.ci/run` sets it: where a test whose requirement is missing fails instead
  of skipping."""
  return os.environ.get('CI', '').lower() == 'true'


def real_data_dir(dataset: str) -> str:
  """$TFDS_DATA_DIR when it holds `dataset`, else skip the calling test; with CI=true (as CI
  runs) fail it instead, so that missing data cannot pass for a green run."""
  data_dir = os.environ.get('TFDS_DATA_DIR')
  if not data_dir or not (Path(data_dir) / dataset).is_dir():
    reason = f'TFDS_DATA_DIR ({data_dir or "unset"}) does not hold {dataset}'
    if in_ci():
      pytest.fail(f'{reason}: CI runs every real-data test; give CI the prepared dataset')
    pytest.skip(reason)
  return data_dir


def assert_one_line_error(result, problem: str, fix: str):
  """The run exited with status 1 and exactly one `error: <problem>; <fix>` line, no traceback."""
  assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, result.stderr[-3000:]
  assert '; ' in errors[0], f'no "; <fix>" part: {errors[0]}'
  remedy = errors[0].split('; ', 1)[1]
  assert problem in errors[0], errors[0]
  assert fix in remedy, f'{fix!r} not in the fix part of: {errors[0]}'
