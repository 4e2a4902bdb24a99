"""Shared helpers: run an experiment's CLI in a subprocess with N simulated CPU devices."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_experiment(experiment: str, *flags: str, devices: int = 1, mock: bool = True,
                   examples: int = 96, timeout: int = 300) -> subprocess.CompletedProcess:
  """`python -m experiments.<experiment> flags...` (on mock data unless mock=False)."""
  env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices), JAX_PLATFORMS='cpu',
             MOCK_EXAMPLES=str(examples), TF_CPP_MIN_LOG_LEVEL='2')
  env.pop('XLA_FLAGS', None)
  command = ([sys.executable, str(ROOT / 'tests' / 'mock_experiment.py'), experiment] if mock
             else [sys.executable, '-m', f'experiments.{experiment}'])
  return subprocess.run(command + list(flags), cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)


def last_json_line(stdout: str) -> dict:
  return json.loads(stdout.strip().splitlines()[-1])


def real_data_dir(dataset: str) -> str:
  """$TFDS_DATA_DIR when it holds `dataset`, else skip the calling test."""
  data_dir = os.environ.get('TFDS_DATA_DIR')
  if not data_dir or not (Path(data_dir) / dataset).is_dir():
    pytest.skip(f'TFDS_DATA_DIR does not hold {dataset}')
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
