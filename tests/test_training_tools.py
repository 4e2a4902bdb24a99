"""The training tools together in one run: --ema_decay (the moving average of the weights and
BatchNorm statistics, in the train state and the checkpoints, and what evaluation, the report,
zoo.load, export and serving use), --mixup_alpha with --cutmix_alpha, and --accumulate_steps, with
augmentation, on a narrow ResNet (BatchNorm) and mock data: the average's recursion, exact resume,
and the same model on 1 and 2 devices. Mixing alone: tests/test_mixing.py; accumulation alone:
tests/test_accumulation.py."""
import json

import jax
import numpy as np
import optax
import pytest

import zoo
from conftest import config_of, last_json_line, mock_data, run_experiment, train_in_process
from resume_check import assert_resumes_exactly, without_timings
from zoo import checkpoints, packed
from zoo.config import Config
from zoo.errors import ZooError
from zoo.training import builder, loop

DECAY = 0.8
FLAGS = ('--model=resnet20', '--model.blocks_per_stage=1', '--model.widths=4,8,8', '--optimizer=sgd',
         '--learning_rate=0.05', '--epochs=1', '--batch_size=16', '--eval_batch_size=48', '--notensorboard',
         '--augment', '--mixup_alpha=0.4', '--cutmix_alpha=1.0', '--accumulate_steps=2', f'--ema_decay={DECAY}',
         '--checkpoint_every_steps=1', '--keep_checkpoints=20')
STEPS_PER_EPOCH = 6  # 96 mock examples, batch 16


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('tools') / 'w'
  history, log = train_in_process('cifar', f'--workdir={workdir}', *FLAGS)
  return workdir, history, log


def _arrays(workdir, step=None) -> dict:
  return checkpoints.restore_arrays(workdir, step)[1]


def test_the_average_follows_every_step_and_batchnorm_statistics_too(run):
  """average(t) = D average(t - 1) + (1 - D) weights(t), from consecutive checkpoints."""
  workdir, _, log = run
  assert 'Evaluating the ema weights' in log
  for step in (2, 5, 6):
    before, after = _arrays(workdir, step - 1), _arrays(workdir, step)
    assert set(after['ema']) == {'params', 'batch_stats'}
    expected = jax.tree.map(lambda old, new: DECAY * old + (1 - DECAY) * new, before['ema'],
                            {'params': after['params'], 'batch_stats': after['batch_stats']})
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), after['ema'], expected)
  final = _arrays(workdir)
  assert not np.allclose(final['ema']['params']['Dense_0']['kernel'], final['params']['Dense_0']['kernel'])


def test_evaluation_the_report_load_and_a_packed_model_use_the_average(run, tmp_path):
  workdir, history, _ = run
  with mock_data():
    result = loop.evaluate(workdir)
  assert result['weights'] == 'ema'
  # Each epoch's evaluation and --mode=eval measure the same (averaged) model.
  assert result['loss'] == pytest.approx(history[-1]['eval_loss'], rel=1e-5)
  assert json.loads((workdir / 'eval.json').read_text())['weights'] == 'ema'
  ema = _arrays(workdir)['ema']
  trained = zoo.load(workdir)
  jax.tree.map(np.testing.assert_array_equal, trained.variables, ema)
  folder = packed.write_folder(workdir, tmp_path / 'packed')
  jax.tree.map(np.testing.assert_array_equal, zoo.load(folder).variables, ema)
  images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  raw = trained.model.apply(ema, trained.preprocess(images), train=False)
  np.testing.assert_allclose(trained.predict(images), jax.nn.softmax(raw), rtol=1e-5, atol=1e-6)
  with pytest.raises(ZooError, match='is a packed model: it holds the moving average alone; pass --eval_weights=auto'):
    loop.evaluate(folder, weights='trained')


def test_eval_weights_trained_evaluates_the_weights_the_average_follows(run, tmp_path):
  workdir, history, _ = run
  result = run_experiment('cifar', '--mode=eval', f'--workdir={workdir}', '--eval_weights=trained',
                          f'--eval_output={tmp_path}')
  assert result.returncode == 0, result.stderr[-3000:]
  evaluation = last_json_line(result.stdout)
  assert evaluation['weights'] == 'trained' and 'evaluating the trained weights' in result.stderr
  with mock_data():
    split = builder.open_workdir(workdir).dataset.load('test')
  arrays, trained = _arrays(workdir), zoo.load(workdir)
  logits = trained.model.apply({'params': arrays['params'], 'batch_stats': arrays['batch_stats']},
                               trained.preprocess(split.inputs), train=False)
  loss = float(optax.softmax_cross_entropy_with_integer_labels(logits, split.labels).mean())
  assert evaluation['loss'] == pytest.approx(loss, rel=1e-5)
  assert evaluation['loss'] != pytest.approx(history[-1]['eval_loss'], rel=1e-5)  # the average's


def test_a_run_with_every_tool_resumes_bit_identical(run, tmp_path, caplog):
  workdir, history, _ = run
  config, _, _ = config_of('cifar', f'--workdir={workdir}', *FLAGS)
  with mock_data():
    assert_resumes_exactly(config, workdir, tmp_path / 'resumed', history, caplog, 4, STEPS_PER_EPOCH)
  jax.tree.map(np.testing.assert_array_equal, _arrays(workdir)['ema'], _arrays(tmp_path / 'resumed')['ema'])


def test_a_decay_outside_zero_to_one_is_one_error_line():
  with pytest.raises(ZooError, match=r'--ema_decay=1.0 is out of range; pass 0 <= --ema_decay < 1'):
    Config(ema_decay=1.0).validate(1)


@pytest.mark.slow
def test_two_devices_and_the_host_pipeline_train_the_same_model(run, tmp_path):
  """The run again on 2 devices through the command line, its batches streamed by tf.data: the mixing
  partners and draws, the micro-batches and the average are those of the 1-device run on the
  device-held feed, up to the rounding of the reductions (tests/test_devices.py's tolerance)."""
  workdir, history, _ = run
  result = run_experiment('cifar', f'--workdir={tmp_path}', *FLAGS, '--input_pipeline=tf_data', devices=2)
  assert result.returncode == 0, result.stderr[-3000:]
  two = json.loads((tmp_path / 'history.json').read_text())
  for a, b in zip(without_timings(two), without_timings(history), strict=True):
    assert a.pop('train_loss') == pytest.approx(b.pop('train_loss'), rel=1e-5)
    assert a.pop('eval_loss') == pytest.approx(b.pop('eval_loss'), rel=1e-5)
    assert {k: v for k, v in a.items() if 'flop' not in k} == {k: v for k, v in b.items() if 'flop' not in k}
  one, other = _arrays(workdir), _arrays(tmp_path)
  for name in ('params', 'batch_stats', 'ema'):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5), other[name], one[name])


def test_a_step_of_micro_batches_counts_the_flops_of_the_undivided_step(run, tmp_path):
  """XLA counts a loop's body once; the micro-batch loop must not make the log's FLOPs one micro-batch's."""
  _, history, _ = run
  flags = [f for f in FLAGS if not f.startswith('--accumulate_steps')]
  undivided, _ = train_in_process('cifar', f'--workdir={tmp_path / "w"}', *flags, '--accumulate_steps=1')
  assert history[-1]['flops_per_step'] == undivided[-1]['flops_per_step'] > 0
