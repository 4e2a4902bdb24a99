"""Kills, preemption notices, damaged checkpoints, failed reads, a full disk and reruns: the run still
ends exactly where an uninterrupted one does, and no file is deleted."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, assert_one_line_error, last_json_line, run_experiment
from test_training import SMALL, restore_plain, train, without_timings
from zoo import checkpoints
from zoo import workdir as workdir_lib
from zoo.config import Config
from zoo.errors import ZooError

FLAGS = (*SMALL, '--epochs=3', '--checkpoint_every_steps=1', '--keep_checkpoints=50')


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('reference')
  return workdir, train(workdir, *FLAGS)


def start(workdir, *extra_flags) -> subprocess.Popen:
  env = dict(os.environ, JAX_NUM_CPU_DEVICES='1', JAX_PLATFORMS='cpu', MOCK_EXAMPLES='96', TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.Popen([sys.executable, str(ROOT / 'tests' / 'mock_experiment.py'), 'cifar',
                           f'--workdir={workdir}', *FLAGS, *extra_flags], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def saved_steps(workdir) -> list[int]:
  directory = Path(workdir) / 'checkpoints'
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.exists() else []


def wait_for_step(process, workdir, step, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline and process.poll() is None:
    if saved_steps(workdir) and saved_steps(workdir)[-1] >= step:
      return
    time.sleep(0.05)
  raise AssertionError(f'no checkpoint {step} before the process ended: {process.communicate()[1][-2000:]}')


def assert_same_result(workdir, reference):
  ref_dir, ref_history = reference
  history = json.loads((Path(workdir) / 'history.json').read_text())
  assert without_timings(history) == without_timings(ref_history)
  jax.tree.map(np.testing.assert_array_equal, restore_plain(workdir)['params'], restore_plain(ref_dir)['params'])


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_is_bit_identical(reference, tmp_path):
  process = start(tmp_path)
  wait_for_step(process, tmp_path, 8)  # epoch 2 of 3, mid-epoch
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL
  train(tmp_path, *FLAGS, resumes_from=saved_steps(tmp_path)[-1])
  assert_same_result(tmp_path, reference)


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly_then_resumes(reference, tmp_path):
  process = start(tmp_path)
  wait_for_step(process, tmp_path, 3)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 0, stderr[-3000:]
  assert 'SIGTERM: saved step' in stderr
  stopped_at = saved_steps(tmp_path)[-1]
  assert stopped_at < 18
  train(tmp_path, *FLAGS, resumes_from=stopped_at)
  assert_same_result(tmp_path, reference)


@pytest.mark.slow
def test_sigterm_after_an_epoch_without_evaluation_exits_cleanly(tmp_path):
  """The summary names the last evaluated epoch; with none yet, it has no eval figures."""
  process = start(tmp_path, '--eval_every_epochs=3')  # only the last epoch is evaluated
  wait_for_step(process, tmp_path, 7)  # past epoch 1, which has a history entry without evaluation
  process.send_signal(signal.SIGTERM)
  stdout, stderr = process.communicate(timeout=120)
  assert process.returncode == 0, stderr[-3000:]
  assert 'Traceback' not in stderr and 'SIGTERM: saved step' in stderr
  stopped_at = saved_steps(tmp_path)[-1]
  assert stopped_at < 18
  summary = last_json_line(stdout)
  assert summary['epochs'] == stopped_at // 6 and 'eval_accuracy' not in summary
  history = train(tmp_path, *FLAGS, '--eval_every_epochs=3', resumes_from=stopped_at)
  assert [('eval_accuracy' in h) for h in history] == [False, False, True]


def damage(step_dir: Path) -> None:
  for path in step_dir.rglob('*'):
    if path.is_file() and path.stat().st_size > 0 and 'ocdbt' in str(path):
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.slow
def test_a_damaged_latest_checkpoint_falls_back_and_nothing_is_deleted(reference, tmp_path):
  import shutil
  shutil.copytree(reference[0], tmp_path / 'w')
  workdir = tmp_path / 'w'
  damage(workdir / 'checkpoints' / '18')
  evaluation = run_experiment('cifar', '--mode=eval', f'--workdir={workdir}')
  assert evaluation.returncode == 0, evaluation.stderr[-3000:]
  assert 'is damaged' in evaluation.stderr
  assert last_json_line(evaluation.stdout)['step'] == 17
  assert (workdir / 'checkpoints' / '18').exists()  # eval never touches the files
  train(workdir, *FLAGS, resumes_from=17)  # redoes step 18
  assert (workdir / 'checkpoints' / 'unreadable-18').is_dir()  # kept, renamed aside
  assert_same_result(workdir, reference)


@pytest.mark.slow
def test_resume_from_an_epochs_last_checkpoint_is_bit_identical(reference, tmp_path):
  import shutil
  shutil.copytree(reference[0], tmp_path / 'w')
  workdir = tmp_path / 'w'
  for step_dir in (workdir / 'checkpoints').iterdir():  # as if killed right after epoch 1's save
    if step_dir.name.isdigit() and int(step_dir.name) > 6:
      shutil.rmtree(step_dir)
  train(workdir, *FLAGS, resumes_from=6)
  assert_same_result(workdir, reference)


def test_same_seed_same_devices_gives_identical_history(reference, tmp_path):
  assert without_timings(train(tmp_path, *FLAGS)) == without_timings(reference[1])


# Damage against failures to read: in-process, on copies of the reference run's last checkpoints.

@flax.struct.dataclass
class PlainState:
  """The fields of a TrainState that a checkpoint holds: the template `checkpoints.restore` fills."""
  step: object
  params: object
  opt_state: object
  batch_stats: object = flax.struct.field(default_factory=dict)
  lookahead: object = None
  ema: object = None


@pytest.fixture(scope='module')
def template(reference):
  """(state, epoch metrics) shaped as the reference run's: what training restores onto."""
  _, tree = checkpoints.restore_arrays(reference[0], step=18)
  tree = jax.tree.map(jnp.asarray, tree)
  return PlainState(tree['step'], tree['params'], tree['opt_state']), tree['epoch_metrics']


# orbax leaves the reads of the other arrays unawaited when one fails: noise, not a failure.
ORBAX_UNAWAITED_READS = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')


def copy_steps(reference, workdir: Path, steps=(16, 17, 18)) -> Path:
  """A workdir holding the reference run's config and these checkpoints (a cheap copy)."""
  (workdir / 'checkpoints').mkdir(parents=True)
  shutil.copy(reference[0] / 'config.json', workdir)
  for step in steps:
    shutil.copytree(reference[0] / 'checkpoints' / str(step), workdir / 'checkpoints' / str(step))
  return workdir


def listing(workdir) -> list[str]:
  return sorted(str(p.relative_to(workdir)) for p in (Path(workdir) / 'checkpoints').rglob('*'))


def largest_file(step_dir: Path) -> Path:
  return max((p for p in step_dir.rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)


def garble(path: Path) -> None:
  data = bytearray(path.read_bytes())
  for i in range(0, len(data), 7):
    data[i] ^= 0x5A
  path.write_bytes(bytes(data))


DAMAGE = {  # what a crash, a bad disk or a careless copy leaves
    'data file deleted': lambda step_dir: largest_file(step_dir).unlink(),
    'data file truncated': lambda step_dir: os.truncate(largest_file(step_dir), 100),
    'metadata garbled': lambda step_dir: garble(step_dir / 'default' / '_METADATA'),
    'index garbled': lambda step_dir: garble(step_dir / 'default' / 'manifest.ocdbt'),
    'every ocdbt file halved': damage,
}


@ORBAX_UNAWAITED_READS
@pytest.mark.parametrize('kind', DAMAGE)
def test_each_kind_of_damage_is_recognised_and_the_step_moved_aside(reference, template, tmp_path, kind):
  workdir = copy_steps(reference, tmp_path / 'w')
  DAMAGE[kind](workdir / 'checkpoints' / '18')
  before = listing(workdir)
  assert checkpoints.restore_arrays(workdir)[0] == 17  # zoo.load, --init_from: the next older one ...
  assert listing(workdir) == before  # ... and the files as they were
  manager = checkpoints.create_manager(workdir, keep=50)
  state, _ = checkpoints.restore(manager, *template, set_aside_unreadable=True)
  assert int(state.step) == 17
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == ['16', '17', 'unreadable-18']


@ORBAX_UNAWAITED_READS
def test_a_damaged_checkpoint_is_moved_aside_to_a_free_name(reference, template, tmp_path):
  workdir = copy_steps(reference, tmp_path / 'w')
  earlier = workdir / 'checkpoints' / 'unreadable-18'  # set aside by an earlier run
  earlier.mkdir()
  (earlier / 'kept').write_text('an earlier damaged step 18')
  damage(workdir / 'checkpoints' / '18')
  state, _ = checkpoints.restore(checkpoints.create_manager(workdir, keep=50), *template, set_aside_unreadable=True)
  assert int(state.step) == 17
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == ['16', '17', 'unreadable-18',
                                                                        'unreadable-18-2']
  assert (earlier / 'kept').read_text() == 'an earlier damaged step 18'


def orbax_wrapped(error: BaseException) -> Exception:
  """How orbax passes on an error met while reading an array (serialization.py)."""
  try:
    raise Exception('Encountered error while reading array index: (slice(0, 32, 1),).') from error
  except Exception as wrapped:  # pylint: disable=broad-except
    return wrapped


READ_FAILURES = {  # of the moment or of the machine: the files may well be intact
    'permission': PermissionError(errno.EACCES, os.strerror(errno.EACCES), 'checkpoints/18/default/_METADATA'),
    'memory': MemoryError(),
    'memory while reading an array': orbax_wrapped(MemoryError()),
    'input/output error': OSError(errno.EIO, os.strerror(errno.EIO)),
    'stale network file handle': orbax_wrapped(OSError(errno.ESTALE, os.strerror(errno.ESTALE))),
    'tensorstore permission': ValueError('PERMISSION_DENIED: Error reading "params.w/0.0" in OCDBT database at '
                                         'local file "checkpoints/18/default/": Permission denied'),
    'tensorstore unavailable': orbax_wrapped(ValueError('UNAVAILABLE: Error reading "params.w/0.0" in OCDBT '
                                                        'database at local file "checkpoints/18/default/"')),
}
NOTHING_CHANGED = r'checkpoint .*checkpoints/18 could not be read .*nothing was changed; .*rerun'


@pytest.mark.parametrize('failure', READ_FAILURES)
def test_a_checkpoint_that_could_not_be_read_is_left_as_it_is_and_the_run_stops(reference, template, tmp_path,
                                                                              monkeypatch, failure):
  """No walking back to an older step (or to step 0) over a checkpoint that may be intact."""
  workdir = copy_steps(reference, tmp_path / 'w')
  before = listing(workdir)

  def fail(*args, **kwargs):
    raise READ_FAILURES[failure]
  monkeypatch.setattr(checkpoints._Manager, 'restore', fail)
  with pytest.raises(ZooError, match=NOTHING_CHANGED):
    checkpoints.restore(checkpoints.create_manager(workdir, keep=50), *template, set_aside_unreadable=True)
  with pytest.raises(ZooError, match=NOTHING_CHANGED):
    checkpoints.restore_arrays(workdir)
  assert listing(workdir) == before


@ORBAX_UNAWAITED_READS
def test_a_checkpoint_of_another_structure_is_no_damage(reference, template, tmp_path):
  """orbax's own refusal (here a template with --lookahead's average, which the run did not save)."""
  workdir = copy_steps(reference, tmp_path / 'w')
  before = listing(workdir)
  state, metrics = template
  with pytest.raises(ZooError, match=NOTHING_CHANGED):
    checkpoints.restore(checkpoints.create_manager(workdir, keep=50), state.replace(lookahead=state.params),
                        metrics, set_aside_unreadable=True)
  assert listing(workdir) == before


def test_a_directory_that_may_not_be_read_is_no_damage(reference, template, tmp_path):
  """orbax reports a directory it may not list as a missing file: the zoo looks before it judges."""
  workdir = copy_steps(reference, tmp_path / 'w')
  before = listing(workdir)
  locked = workdir / 'checkpoints' / '18' / 'default'
  locked.chmod(0)
  try:
    try:
      os.listdir(locked)
      pytest.skip('this user reads every directory whatever its mode (root)')
    except PermissionError:
      pass
    with pytest.raises(ZooError, match=NOTHING_CHANGED):
      checkpoints.restore(checkpoints.create_manager(workdir, keep=50), *template, set_aside_unreadable=True)
    with pytest.raises(ZooError, match=NOTHING_CHANGED):
      checkpoints.restore_arrays(workdir)
  finally:
    locked.chmod(0o755)
  assert listing(workdir) == before


def test_a_resumed_run_with_fewer_checkpoints_to_keep_prunes_the_oldest_and_keeps_the_newest(reference, template,
                                                                                           tmp_path):
  """What --keep_checkpoints' help says; 0, which would delete the newest too, is refused (test_config.py)."""
  workdir = copy_steps(reference, tmp_path / 'w')
  manager = checkpoints.create_manager(workdir, keep=1)
  assert saved_steps(workdir) == [16, 17, 18]  # opening prunes nothing
  state, metrics = template
  checkpoints.save(manager, state.replace(step=state.step + 1), metrics)
  checkpoints.wait_until_finished(manager)
  assert saved_steps(workdir) == [19]
  with pytest.raises(ValueError, match='keep=0'):
    checkpoints.create_manager(workdir, keep=0)


# A full disk: one line naming it, and everything written before kept.

NO_SPACE = os.strerror(errno.ENOSPC)
# What TensorStore (orbax's array writer) raises on a full disk: measured on a 2 MB tmpfs.
TENSORSTORE_NO_SPACE = ('RESOURCE_EXHAUSTED: Error writing "params.w/0.0" in OCDBT database at local file '
                        f'"checkpoints/19.orbax-checkpoint-tmp/default/": Failed to write 650052 bytes: {NO_SPACE}')


@pytest.mark.parametrize('where', ['save', 'wait_until_finished'])
def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_last_checkpoint(template, tmp_path, monkeypatch,
                                                                                  where):
  manager = checkpoints.create_manager(tmp_path, keep=1)
  state, metrics = template
  checkpoints.save(manager, state, metrics)
  checkpoints.wait_until_finished(manager)

  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, NO_SPACE, str(tmp_path)) if where == 'save' else ValueError(TENSORSTORE_NO_SPACE)
  monkeypatch.setattr(checkpoints._Manager, where, full)
  with pytest.raises(ZooError, match=f'the disk holding {tmp_path}/checkpoints is full .*; free space on it and rerun'):
    checkpoints.save(manager, state.replace(step=state.step + 1), metrics)
    checkpoints.wait_until_finished(manager)
  monkeypatch.undo()
  assert int(restore_plain(tmp_path)['step']) == 18  # keep=1 and a failed save: the last one stays


@pytest.mark.parametrize('write', ['history', 'config', 'description'])
def test_a_full_disk_while_writing_a_workdir_file_is_one_line_and_keeps_what_was_there(tmp_path, monkeypatch, write):
  workdir_lib.write_history(tmp_path, [{'epoch': 1}])
  before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
  write_text = Path.write_text

  def half_then_full(path, text, *args, **kwargs):
    write_text(path, text[:len(text) // 2], *args, **kwargs)
    raise OSError(errno.ENOSPC, NO_SPACE, str(path))
  monkeypatch.setattr(Path, 'write_text', half_then_full)
  name, call = {'history': ('history.json', lambda: workdir_lib.write_history(tmp_path, [{'epoch': 1}, {'epoch': 2}])),
                'config': ('config.json', lambda: workdir_lib.record_config(Config(), tmp_path)),
                'description': ('dataset.json', lambda: workdir_lib.record_description(tmp_path, {'class_names': []}))}[write]
  with pytest.raises(ZooError, match=f'the disk holding {tmp_path / name} is full .*; free space on it and rerun'):
    call()
  assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no half file, no temporary file


FULL_DISK_AFTER_STEP_12 = f"""
import errno, os, runpy, sys
import orbax.checkpoint as ocp
save = ocp.CheckpointManager.save
def save_or_full_disk(manager, step, *args, **kwargs):
  if step > 12:
    raise ValueError({TENSORSTORE_NO_SPACE!r})
  return save(manager, step, *args, **kwargs)
ocp.CheckpointManager.save = save_or_full_disk
sys.argv = ['mock_experiment.py', *sys.argv[1:]]
runpy.run_path({str(ROOT / 'tests' / 'mock_experiment.py')!r}, run_name='__main__')
"""


def test_a_full_disk_stops_training_with_one_line_and_loses_nothing(reference, tmp_path):
  workdir = copy_steps(reference, tmp_path / 'w', steps=range(1, 13))
  shutil.copy(reference[0] / 'history.json', workdir)
  history = (workdir / 'history.json').read_bytes()
  env = dict(os.environ, JAX_NUM_CPU_DEVICES='1', JAX_PLATFORMS='cpu', MOCK_EXAMPLES='96', TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run([sys.executable, '-c', FULL_DISK_AFTER_STEP_12, 'cifar', f'--workdir={workdir}', *FLAGS],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert_one_line_error(result, f'the disk holding {workdir.absolute()}/checkpoints is full', 'free space on it')
  assert saved_steps(workdir) == list(range(1, 13))
  assert (workdir / 'history.json').read_bytes() == history
  jax.tree.map(np.testing.assert_array_equal, restore_plain(workdir, 12)['params'],
               restore_plain(reference[0], 12)['params'])
