"""Two processes on localhost (CPU, gloo collectives, one device each) train as one process on one
device: BatchNorm statistics span both processes, dropout masks follow the global example
index, and each process feeds its own rows of every global batch."""
import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import ROOT
from test_training import SMALL, assert_trained_alike, train


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize('model_flags', [
    # BatchNorm; the split held on the devices. Narrowed: the same layers, a fraction of the compilation.
    ('--model=resnet20', '--model.blocks_per_stage=1', '--model.widths=8,16,32', '--epochs=1'),
    ('--model=mlp', '--input_pipeline=tf_data', '--epochs=1'),  # dropout; each process streams its rows
], ids=['resnet20-device-feed', 'mlp-tf-data-feed'])
def test_two_processes_train_like_one_process_on_one_device(tmp_path, model_flags):
  flags = (*SMALL, '--optimizer=sgd', '--learning_rate=0.05', *model_flags)
  port = free_port()
  env = dict(os.environ, JAX_NUM_CPU_DEVICES='1', JAX_PLATFORMS='cpu', MOCK_EXAMPLES='96', TF_CPP_MIN_LOG_LEVEL='2')
  workdir = tmp_path / 'two'
  processes = [subprocess.Popen(
      [sys.executable, str(ROOT / 'tests' / 'mock_experiment.py'), 'cifar', f'--workdir={workdir}', *flags,
       '--accelerator=cpu', f'--coordinator_address=localhost:{port}', '--num_processes=2', f'--process_id={i}'],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=300) for p in processes]
  for p, (out, err) in zip(processes, outputs):
    assert p.returncode == 0, err[-3000:]
  summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
  assert summaries[0]['eval_accuracy'] == summaries[1]['eval_accuracy']  # identical on every process
  # Compared with one process on one device: with per-process BatchNorm statistics or dropout masks
  # (or rows fed twice or not at all) two processes would end far from it.
  history = json.loads((workdir / 'history.json').read_text())
  assert_trained_alike(workdir, history, tmp_path / 'single', train(tmp_path / 'single', *flags, devices=1))
