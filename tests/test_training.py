"""End to end through the command line, on mock data: train, eval, resume, devices, errors."""
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import assert_one_line_error, last_json_line, mock_data, real_data_dir, run_experiment, train_in_process
from zoo.models.cnn import SimpleCNN

# 96 mock examples per split, batch 16: 6 steps per epoch; eval batch 40 pads the last batch.
SMALL = ('--epochs=2', '--batch_size=16', '--eval_batch_size=40', '--log_every_steps=2')


def train(workdir, *flags, devices=1, resumes_from: int | None = None):
  """Trains what the command line trains: on one device in this process (`train_in_process`: the
  command line itself is tested by the eval and error tests here), on more through the command line
  with simulated devices. With `resumes_from`, asserts that the run went on from that saved step (a
  rerun that trained again from step 0 fails here, even if it ends alike)."""
  if devices == 1:
    _, log = train_in_process('cifar', f'--workdir={workdir}', *SMALL, *flags)
  else:
    result = run_experiment('cifar', f'--workdir={workdir}', *SMALL, *flags, devices=devices)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr
  if resumes_from is not None:
    assert f'Resuming from step {resumes_from} in' in log, log[-3000:]
  else:
    assert 'Resuming from step' not in log
  return json.loads((Path(workdir) / 'history.json').read_text())


def restore_plain(workdir, step=None):
  """What README shows: plain orbax, no zoo code."""
  manager = ocp.CheckpointManager(Path(workdir).absolute() / 'checkpoints')
  return manager.restore(step if step is not None else manager.latest_step(), args=ocp.args.StandardRestore())


def without_timings(history):
  return [{k: v for k, v in h.items() if k not in ('seconds', 'train_images_per_second', 'train_gflops_per_second')}
          for h in history]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('run') / 'w'
  return workdir, train(workdir, '--checkpoint_every_steps=2', '--keep_checkpoints=20')


def test_training_leaves_history_plot_tensorboard_config_and_checkpoints(trained):
  workdir, history = trained
  assert [h['epoch'] for h in history] == [1, 2]
  assert [h['step'] for h in history] == [6, 12]
  for entry in history:
    assert entry['eval_examples'] == 96
    assert 0 <= entry['train_accuracy'] <= 1 and np.isfinite(entry['train_loss'])
    assert entry['train_images_per_second'] > 0 and entry['train_gflops_per_second'] > 0
    assert entry['flops_per_step'] == pytest.approx(16 * 26.4e6, rel=0.05)  # XLA: 26.4 MFLOP/image
    assert entry['train_pflop'] == pytest.approx(entry['flops_per_step'] * entry['step'] / 1e15)
  assert (workdir / 'history.png').stat().st_size > 1000
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  events = EventAccumulator(str(workdir / 'tensorboard'))
  events.Reload()  # how TensorBoard reads them: every scalar of every epoch, at the epoch's step
  scalars = events.Scalars('eval_accuracy')
  assert [e.step for e in scalars] == [h['step'] for h in history]
  assert [e.value for e in scalars] == pytest.approx([h['eval_accuracy'] for h in history])  # float32
  config = json.loads((workdir / 'config.json').read_text())
  assert config['model'] == 'simple_cnn' and config['batch_size'] == 16 and config['epochs'] == 2
  steps = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  assert steps == [2, 4, 6, 8, 10, 12]


def test_eval_mode_needs_only_the_workdir_and_counts_every_example(trained):
  workdir, history = trained
  result = run_experiment('cifar', '--mode=eval', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((workdir / 'eval.json').read_text())
  assert report == last_json_line(result.stdout)
  assert report['split'] == 'test' and report['step'] == 12 and report['num_examples'] == 96
  assert report['accuracy'] == pytest.approx(history[-1]['eval_accuracy'])
  assert report['loss'] == pytest.approx(history[-1]['eval_loss'], rel=1e-5)


def test_a_checkpoint_restores_with_plain_orbax_into_the_model(trained):
  workdir, _ = trained
  tree = restore_plain(workdir)
  assert int(tree['step']) == 12
  logits = SimpleCNN().apply({'params': tree['params']}, np.zeros((2, 32, 32, 3), np.float32))
  assert logits.shape == (2, 10) and np.isfinite(logits).all()


def test_resume_mid_epoch_finishes_bit_identical(trained, tmp_path):
  workdir, history = trained
  # A run "killed" after step 8 (mid epoch 2): its workdir as it was then.
  resumed = tmp_path / 'resumed'
  shutil.copytree(workdir, resumed)
  for step_dir in (resumed / 'checkpoints').iterdir():
    if step_dir.name.isdigit() and int(step_dir.name) > 8:
      shutil.rmtree(step_dir)
  (resumed / 'history.json').write_text(json.dumps(history[:1]))
  resumed_history = train(resumed, '--checkpoint_every_steps=2', '--keep_checkpoints=20', resumes_from=8)
  assert without_timings(resumed_history) == without_timings(history)
  jax.tree.map(np.testing.assert_array_equal, restore_plain(resumed)['params'], restore_plain(workdir)['params'])


@pytest.mark.slow
def test_lookahead_and_alternating_flip_resume_bit_identical(tmp_path):
  flags = ('--lookahead', '--lookahead_start_epoch=0', '--lookahead_every_steps=4', '--augment',
           '--alternating_flip', '--eval_every_epochs=2', '--checkpoint_every_steps=2', '--keep_checkpoints=20')
  history = train(tmp_path / 'w', *flags)
  assert 'eval_accuracy' not in history[0] and history[1]['eval_examples'] == 96  # evaluated once
  assert set(restore_plain(tmp_path / 'w', 10)['lookahead']) == {'params', 'batch_stats'}
  resumed = tmp_path / 'resumed'
  shutil.copytree(tmp_path / 'w', resumed)
  for step_dir in (resumed / 'checkpoints').iterdir():
    if step_dir.name.isdigit() and int(step_dir.name) > 10:  # killed after step 10 (a lookahead sync: 8, 12)
      shutil.rmtree(step_dir)
  (resumed / 'history.json').write_text(json.dumps(history[:1]))
  assert without_timings(train(resumed, *flags, resumes_from=10)) == without_timings(history)
  jax.tree.map(np.testing.assert_array_equal, restore_plain(resumed), restore_plain(tmp_path / 'w'))


def test_muon_resumes_bit_identical(tmp_path):
  """--optimizer=muon on mock data (simple_cnn's convolution filters on Muon, its biases and dense
  layers on SGD, a linear schedule): the Muon momentum is checkpointed, and a run killed mid epoch
  resumes to the same model."""
  flags = ('--optimizer=muon', '--nesterov', '--learning_rate=0.05', '--muon_learning_rate=0.1', '--schedule=linear',
           '--rule={head}/.*:lr=0.5', '--checkpoint_every_steps=2', '--keep_checkpoints=20')
  history = train(tmp_path / 'w', *flags)
  assert history[-1]['train_loss'] < history[0]['train_loss']
  kernel = restore_plain(tmp_path / 'w', 8)['params']['Conv_0']['kernel']
  momentum = [x for x in jax.tree.leaves(restore_plain(tmp_path / 'w', 8)['opt_state']) if x.shape == kernel.shape]
  assert momentum and all(np.abs(x).max() > 0 for x in momentum)  # Muon's buffer for the filter
  resumed = tmp_path / 'resumed'
  shutil.copytree(tmp_path / 'w', resumed)
  for step_dir in (resumed / 'checkpoints').iterdir():
    if step_dir.name.isdigit() and int(step_dir.name) > 8:
      shutil.rmtree(step_dir)
  (resumed / 'history.json').write_text(json.dumps(history[:1]))
  assert without_timings(train(resumed, *flags, resumes_from=8)) == without_timings(history)
  jax.tree.map(np.testing.assert_array_equal, restore_plain(resumed), restore_plain(tmp_path / 'w'))


def test_rerunning_a_finished_run_trains_nothing_more(trained):
  workdir, history = trained
  assert without_timings(train(workdir, '--checkpoint_every_steps=2', '--keep_checkpoints=20', resumes_from=12)) == \
      without_timings(history)


def assert_trained_alike(workdir_a, history_a, workdir_b, history_b):
  """Same model up to summation-order rounding: histories and parameters within float tolerance."""
  for a, b in zip(history_a, history_b, strict=True):
    assert a['train_loss'] == pytest.approx(b['train_loss'], rel=1e-5)
    assert a['eval_loss'] == pytest.approx(b['eval_loss'], rel=1e-5)
    assert a['eval_accuracy'] == b['eval_accuracy']
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               restore_plain(workdir_a)['params'], restore_plain(workdir_b)['params'])


def test_device_held_data_trains_like_the_tf_data_pipeline(tmp_path):
  """Same batches, same augmentation, same steps: whether the split sits on the devices (several
  steps per call, here 4 then 2 in each epoch of 6) or streams through tf.data (one step per call).
  On 2 devices, where each feed also splits every batch, tests/test_training_tools.py trains the
  device-held run of 1 device again through tf.data on 2; tests/test_devices.py the device-held
  feed on 1, 2 and 4."""
  flags = ('--optimizer=sgd', '--learning_rate=0.05', '--augment')
  streamed = train(tmp_path / 'tf_data', *flags, '--input_pipeline=tf_data')
  held = train(tmp_path / 'device', *flags, '--input_pipeline=device', '--steps_per_dispatch=4')
  assert_trained_alike(tmp_path / 'device', held, tmp_path / 'tf_data', streamed)
  # The pipeline only changes speed: the workdir accepts the other one on resume (a rerun of a
  # finished run trains nothing).
  assert train(tmp_path / 'device', *flags, '--input_pipeline=tf_data', resumes_from=12) == held


def test_eval_mode_applies_its_evaluation_flags_and_names_bad_ones(trained):
  workdir, history = trained
  # (--deterministic only sets an XLA GPU flag: here it proves XLA accepts it when the backend starts.)
  # Flags that cannot change the result (speed, logging, caches) are accepted, not refused, and the
  # evaluation measures what the run's own evaluation (another batch size, the device feed) measured.
  result = run_experiment('cifar', '--mode=eval', f'--workdir={workdir}', '--eval_batch_size=32', '--deterministic',
                          '--input_pipeline=tf_data', '--split_cache=', '--notensorboard', '--compilation_cache=',
                          '--log_every_steps=5', '--steps_per_dispatch=3')
  assert result.returncode == 0, result.stderr[-3000:]
  report = last_json_line(result.stdout)
  assert report['eval_batch_size'] == 32 and report['num_examples'] == 96
  assert report['accuracy'] == pytest.approx(history[-1]['eval_accuracy'])
  assert_one_line_error(run_experiment('cifar', '--mode=eval', f'--workdir={workdir}', '--eval_batch_size=0'),
                        '--eval_batch_size=0 is not a positive multiple', 'pass e.g. --eval_batch_size=1')
  assert_one_line_error(run_experiment('cifar', '--mode=eval', f'--workdir={workdir}', '--model.tta_level=1'),
                        '--model.tta_level is not a setting of simple_cnn', 'its settings are: none')


@pytest.mark.slow
def test_airbench_recipe_trains_with_its_whitening_frozen(tmp_path):
  recipe = Path(__file__).resolve().parent.parent / 'experiments' / 'recipes' / 'cifar_airbench.flags'
  # Narrowed (the recipe's layers, rules and test-time augmentation at a sixteenth of the width).
  history = train(tmp_path / 'w', f'--flagfile={recipe}', '--epochs=1', '--warmup_epochs=0.5',
                  '--batch_size=16', '--eval_batch_size=40', '--model.widths=16,32,32',
                  '--checkpoint_every_steps=2', '--keep_checkpoints=20')
  assert np.isfinite(history[0]['train_loss']) and history[0]['eval_examples'] == 96
  first, last = restore_plain(tmp_path / 'w', 2)['params'], restore_plain(tmp_path / 'w', 6)['params']
  np.testing.assert_array_equal(first['whiten']['kernel'], last['whiten']['kernel'])
  assert not np.array_equal(first['Dense_0']['kernel'], last['Dense_0']['kernel'])
  # A tta_level given to evaluation (--mode=eval's --model.tta_level) replaces the run's own (the
  # recipe's 2, which its evaluation used); the flag's way there is test_eval_mode_applies_its_evaluation_flags_....
  from zoo.training import loop
  with mock_data():
    evaluation = loop.evaluate(tmp_path / 'w', None, model_settings={'tta_level': 0})
  assert evaluation['model_settings'] == {'tta_level': 0} and evaluation['num_examples'] == 96
  assert evaluation['loss'] != pytest.approx(history[0]['eval_loss'], rel=1e-5)


@pytest.mark.slow
def test_simple_cnn_learns_real_cifar10(tmp_path):
  """A guard against pipeline bugs: chance is 10%.

  One epoch of 10,000 images with one-cycle Adam 3e-3 reached 42.7, 41.0 and 40.1 % (seeds 0-2) on
  2026-12-05 (2-core Intel Xeon CPU, this command; two epochs: 48.9-50.0 %). The bar sits 4 points
  under the lowest, far over chance: a pipeline bug that scrambles labels or images fails it.
  """
  data_dir = real_data_dir('cifar10')
  history, _ = train_in_process('cifar', f'--data_dir={data_dir}', '--train_split=train[:10000]',
                                '--eval_split=train[45000:]', '--epochs=1', '--schedule=onecycle',
                                '--learning_rate=0.003', f'--workdir={tmp_path}', mock=False)
  assert history[-1]['eval_accuracy'] >= 0.36, history[-1]


def test_lookahead_follows_airbench94s_procedure():
  """The in-step `Lookahead` against a transcription of airbench94's loop (weights that grow by 1
  per step stand in for training; BatchNorm statistics are averaged alike)."""
  import optax
  from zoo.training.steps import Lookahead, TrainState
  epochs, steps_per_epoch, start_epoch, every, decay = 6, 7, 2, 3, 0.9
  total = epochs * steps_per_epoch
  lookahead = Lookahead(start_epoch * steps_per_epoch, every, decay, total, steps_per_epoch)
  state = TrainState.create(apply_fn=None, params={'w': np.float32(0)}, tx=optax.identity(),
                            batch_stats={'mean': np.float32(0)},
                            lookahead={'params': {'w': np.float32(0)}, 'batch_stats': {'mean': np.float32(0)}})
  step_fn = jax.jit(lambda s: lookahead(s.replace(step=s.step + 1, params={'w': s.params['w'] + 1},
                                                  batch_stats={'mean': s.batch_stats['mean'] + 1})))
  weight, average, step, expected, got = 0.0, None, 0, [], []
  for epoch in range(epochs):
    for _ in range(steps_per_epoch):
      weight, step = weight + 1, step + 1
      if epoch >= start_epoch and step % every == 0:
        if average is None:
          average = weight
        else:
          rho = decay ** every * (step / total) ** 3
          average += (1 - rho) * (weight - average)
          weight = average
      state = step_fn(state)
      got.append((float(state.params['w']), float(state.batch_stats['mean'])))
      expected.append(weight)
    if average is not None:
      weight = average
    expected[-1] = weight
  np.testing.assert_allclose(np.array(got), np.array([expected, expected]).T, rtol=1e-5)
  assert got[-1][0] < total  # the averaging really held the weights back
