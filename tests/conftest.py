"""Shared helpers: run an experiment's CLI in a subprocess with N simulated CPU devices; every
cache in a temporary folder."""
import atexit
import json
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


def pytest_collection_modifyitems(items):
  """The tests marked `slow` (each half a minute or more) first, the rest in their usual order:
  pytest-xdist hands tests out in this order, so the long ones start together instead of ending
  the run alone on one worker while the other waits."""
  items.sort(key=lambda item: item.get_closest_marker('slow') is None)


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
