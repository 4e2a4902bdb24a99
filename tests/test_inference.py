"""A trained model from its workdir: `zoo.load`, `--mode=predict` on image files, `--help`."""
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

import zoo
from conftest import ROOT, assert_one_line_error, last_json_line, real_data_dir, run_experiment, train_in_process
from zoo import workdir as workdir_lib

SMALL = ('--epochs=1', '--batch_size=16', '--eval_batch_size=40', '--optimizer=sgd', '--learning_rate=0.05')


def _train(workdir, *flags):
  """What `python -m experiments.cifar` trains, in this process: the command line's own part is
  --mode=predict's and --help's, tested below."""
  train_in_process('cifar', f'--workdir={workdir}', *SMALL, *flags)
  return workdir


@pytest.fixture(scope='module')
def cnn(tmp_path_factory):
  return _train(tmp_path_factory.mktemp('cnn') / 'w')


def mock_split(name: str, split: str, monkeypatch) -> dict:
  """The examples `tests/mock_experiment.py` runs on (mock_data is deterministic)."""
  import tensorflow_datasets as tfds
  from zoo.data import tfds_source
  monkeypatch.setattr(tfds_source, '_online', lambda: True)  # mock_data replaces the download itself
  with tfds.testing.mock_data(num_examples=96):
    return tfds_source.load_split(name, split, None)


def test_training_records_class_names_and_input_format(cnn):
  description = json.loads((cnn / 'dataset.json').read_text())
  assert description['dataset'] == 'cifar10'
  assert len(description['class_names']) == 10  # mock metadata numbers them; real CIFAR-10 names them
  assert description['inputs']['kind'] == 'image' and description['inputs']['shape'] == [32, 32, 3]


@pytest.mark.parametrize('model', ['simple_cnn', pytest.param('resnet20', marks=pytest.mark.slow)])
def test_load_predicts_what_the_run_measured(cnn, tmp_path, model, monkeypatch):
  """`zoo.load(W).predict` on the test split counts the accuracy that the run's own evaluation
  after its last epoch recorded (`--mode=eval` gives the run's figures: tests/test_devices.py)."""
  # ResNet-20 narrowed to one block of each stage: BatchNorm statistics are what it adds here.
  workdir = (_train(tmp_path / 'w', f'--model={model}', '--model.blocks_per_stage=1', '--model.widths=8,16,32')
             if model != 'simple_cnn' else cnn)
  final = json.loads((workdir / 'history.json').read_text())[-1]
  trained = zoo.load(workdir)
  assert trained.step == final['step'] and trained.config.model == model
  assert ('batch_stats' in trained.variables) == (model == 'resnet20')
  test = mock_split('cifar10', 'test', monkeypatch)
  probabilities = trained.predict(test['image'], batch_size=32)  # 3 batches, the last one padded
  assert probabilities.shape == (96, 10) and probabilities.dtype == np.float32
  np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
  assert np.mean(probabilities.argmax(axis=1) == test['label']) == final['eval_accuracy']
  logits = trained.model.apply(trained.variables, trained.preprocess(test['image'][:8]), train=False)
  np.testing.assert_allclose(jax.nn.softmax(logits), probabilities[:8], rtol=1e-4, atol=1e-6)


def _images(folder: Path) -> list[Path]:
  """Files of other sizes and modes than the training images: JPEG, PNG, grayscale, RGBA, palette."""
  rng = np.random.default_rng(0)
  folder.mkdir()
  files = {'photo.jpg': Image.fromarray(rng.integers(0, 256, (48, 64, 3), np.uint8)),
           'gray.png': Image.fromarray(rng.integers(0, 256, (20, 28), np.uint8)),
           'logo.png': Image.fromarray(rng.integers(0, 256, (40, 30, 4), np.uint8), 'RGBA'),
           'palette.gif': Image.fromarray(rng.integers(0, 256, (33, 33, 3), np.uint8)).convert('P'),
           'exact.png': Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8))}
  for name, image in files.items():
    image.save(folder / name)
  return [folder / name for name in files]


def test_predict_classifies_image_files_of_any_size_and_mode(cnn, tmp_path):
  files = _images(tmp_path / 'images')
  result = run_experiment('cifar', '--mode=predict', f'--workdir={cnn}', *[f'--image={f}' for f in files])
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(line) for line in result.stdout.splitlines()]
  trained = zoo.load(cnn)
  expected = trained.predict([str(f) for f in files])  # the same files through the Python API
  assert [row['image'] for row in rows] == [str(f) for f in files]
  for row, p in zip(rows, expected):
    assert row['label'] == trained.class_names[int(p.argmax())] == row['top'][0][0]
    assert row['p'] == row['top'][0][1] == pytest.approx(float(p.max()), abs=1e-4)
    assert len(row['top']) == 3 and [q for _, q in row['top']] == sorted([q for _, q in row['top']], reverse=True)
  # An array of the training size is taken as it is; the same image from its PNG file agrees.
  exact = np.asarray(Image.open(files[-1]))
  np.testing.assert_allclose(trained.predict(exact[None]), expected[-1:], rtol=1e-6)


def _png_header(path: Path, width: int, height: int) -> Path:
  """A PNG whose header announces width x height RGBA pixels, with a few bytes of data behind it."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
  header = struct.pack('>IIBBBBB', width, height, 8, 6, 0, 0, 0)
  path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(b'\0' * 64))
                   + chunk(b'IEND', b''))
  return path


def test_predict_reads_paths_from_stdin_and_names_unreadable_files_after_the_rest(cnn, tmp_path):
  """Each file that cannot be read (missing, not an image, a decompression bomb) gets its own error
  line after the readable ones are printed, and the exit status is 1. File names are bytes: one that
  is not UTF-8 is read too."""
  files = _images(tmp_path / 'images')
  (tmp_path / 'notes.txt').write_text('not an image')
  bomb = _png_header(tmp_path / 'bomb.png', 20_000, 20_000)  # 400 million pixels: Pillow refuses to decode it
  latin1 = os.fsencode(tmp_path) + b'/caf\xe9.png'
  shutil.copy(files[2], latin1)
  paths = [os.fsencode(p) for p in (files[0], tmp_path / 'missing.png', bomb, files[1], tmp_path / 'notes.txt')]
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run([sys.executable, '-m', 'experiments.cifar', '--mode=predict', f'--workdir={cnn}'],
                          input=b''.join(p + b'\n' for p in [*paths, latin1]), cwd=ROOT, env=env,
                          capture_output=True, timeout=120)
  stdout, stderr = result.stdout.decode(), result.stderr.decode(errors='replace')
  assert result.returncode == 1, stderr[-3000:]
  assert [json.loads(line)['image'] for line in stdout.splitlines()] == [str(files[0]), str(files[1]),
                                                                        os.fsdecode(latin1)]
  errors = [line for line in stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 3 and 'Traceback' not in stderr, stderr[-3000:]
  assert 'missing.png' in errors[0] and 'notes.txt' in errors[2]
  assert all('; pass a file Pillow opens' in errors[i] for i in (0, 2))
  assert "bomb.png has over 178,956,970 pixels, Pillow's limit against decompression bombs; use a smaller" in errors[1]


def test_transparent_pixels_are_composited_over_white_as_pillow_does(tmp_path):
  """`to_array` composites in bands of rows to spare memory; the pixels are those of Pillow's
  alpha_composite of the whole image over white."""
  from zoo.data import images
  rgba = Image.fromarray(np.random.default_rng(3).integers(0, 256, (2 * images.BAND_ROWS + 7, 9, 4), np.uint8), 'RGBA')
  whole = Image.alpha_composite(Image.new('RGBA', rgba.size, (255, 255, 255, 255)), rgba)
  for channels, mode in ((3, 'RGB'), (1, 'L')):
    shape = (rgba.height, rgba.width, channels)
    np.testing.assert_array_equal(images.to_array(rgba, shape), np.asarray(whole.convert(mode)).reshape(shape))


def test_predict_with_a_terminal_and_no_images_says_how_instead_of_waiting(cnn):
  main, terminal = pty.openpty()
  try:
    env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')
    result = subprocess.run([sys.executable, '-m', 'experiments.cifar', '--mode=predict', f'--workdir={cnn}'],
                            stdin=terminal, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  finally:
    os.close(main)
    os.close(terminal)
  assert_one_line_error(result, '--mode=predict needs image files', 'pass --image=FILE')


def _with_format(cnn, tmp_path, version) -> Path:
  """A copy of `cnn` whose config.json records `version` (None: no version, as before there were any)."""
  old = tmp_path / 'old'
  shutil.copytree(cnn, old)
  values = json.loads((old / 'config.json').read_text())
  values.pop(workdir_lib.FORMAT_KEY)
  if version is not None:
    values[workdir_lib.FORMAT_KEY] = version
  (old / 'config.json').write_text(json.dumps(values))
  return old


@pytest.mark.parametrize('version, found, mode', [(None, 'none', 'eval'),
                                                  (workdir_lib.FORMAT_VERSION + 1, workdir_lib.FORMAT_VERSION + 1,
                                                   'train')])
def test_a_workdir_of_another_format_version_is_refused_everywhere_and_kept(cnn, tmp_path, version, found, mode):
  """Missing (written before versions) or another: every reader stops in one line naming both, and
  nothing in the workdir changes."""
  old = _with_format(cnn, tmp_path, version)
  before = {p: p.read_bytes() for p in old.rglob('*') if p.is_file()}
  problem = f'{old} is a workdir of format {found} and this zoo reads format {workdir_lib.FORMAT_VERSION}'
  fix = 'train again in a new workdir, or use the zoo release that wrote it'
  result = run_experiment('cifar', f'--mode={mode}', f'--workdir={old}', *(SMALL if mode == 'train' else ()))
  assert_one_line_error(result, problem, fix)
  from zoo import export
  from zoo.config import Config
  from zoo.training import finetune
  for read in (zoo.load, lambda w: export.export(w, 'onnx'), workdir_lib.trained_config,
               lambda w: workdir_lib.check_resumable(Config(), w),
               lambda w: finetune.read_source(Config(init_from=str(w)), tmp_path / 'new')):
    with pytest.raises(zoo.errors.ZooError, match=f'^{re.escape(problem)}; {fix}$'):
      read(old)
  assert {p: p.read_bytes() for p in old.rglob('*') if p.is_file()} == before


def test_a_new_workdir_records_this_zoos_format_version(cnn):
  assert json.loads((cnn / 'config.json').read_text())[workdir_lib.FORMAT_KEY] == workdir_lib.FORMAT_VERSION
  from zoo.config import Config
  assert workdir_lib.FORMAT_KEY not in Config.__dataclass_fields__  # config.json's one field that is no setting


def test_a_workdir_without_dataset_json_is_refused(cnn, tmp_path):
  old = tmp_path / 'old'
  shutil.copytree(cnn, old)
  (old / 'dataset.json').unlink()
  with pytest.raises(zoo.errors.ZooError, match='has no dataset.json: the class names .*; rerun its training command'):
    zoo.load(old)


def test_load_names_what_is_wrong(cnn, tmp_path):
  with pytest.raises(zoo.errors.ZooError, match='not a zoo workdir; pass the workdir of a training run'):
    zoo.load(tmp_path)
  with pytest.raises(zoo.errors.ZooError, match='has no checkpoint of step 5; saved steps: 6'):
    zoo.load(cnn, step=5)
  with pytest.raises(zoo.errors.ZooError, match='missing.png: cannot read it as an image'):
    zoo.load(cnn).predict([tmp_path / 'missing.png'])
  with pytest.raises(zoo.errors.ZooError, match='image arrays must be uint8'):
    zoo.load(cnn).predict(np.zeros((1, 32, 32, 3), np.float32))


def test_plain_orbax_restores_a_checkpoint_without_warnings(cnn):
  snippet = f"""
import os
import numpy as np
import orbax.checkpoint as ocp
from zoo.models.cnn import SimpleCNN
manager = ocp.CheckpointManager(os.path.abspath({str(cnn / 'checkpoints')!r}))
tree = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore())
logits = SimpleCNN().apply({{'params': tree['params']}}, np.zeros((1, 32, 32, 3), np.float32))
print(logits.shape)
"""
  result = subprocess.run([sys.executable, '-c', snippet], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == '(1, 10)'
  assert 'WARNING' not in result.stderr and 'could not be restored' not in result.stderr, result.stderr


@pytest.mark.parametrize('experiment, flags', [
    ('cifar', ('--model', '--batch_size', '--learning_rate', '--image', '--mode', '--workdir', '--data_dir')),
    ('imdb', ('--model', '--vocab_size', '--max_length', '--text', '--mode', '--workdir', '--data_dir')),
])
def test_help_lists_the_experiments_flags(experiment, flags):
  result = subprocess.run([sys.executable, '-m', f'experiments.{experiment}', '--help'], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode in (0, 1) and 'Traceback' not in result.stderr, result.stderr[-3000:]  # absl exits 1
  for flag in flags:
    assert f'  {flag}:' in result.stdout, flag
  assert '--helpfull' in result.stdout


@pytest.mark.slow
def test_a_real_cifar10_model_loads_in_a_fresh_process_with_no_data_dir(tmp_path):
  data_dir = real_data_dir('cifar10')
  workdir = tmp_path / 'seed'
  flags = (f'--workdir={workdir}', f'--data_dir={data_dir}', '--split_cache=')
  # Trained and evaluated in this process; loaded in a fresh one, and predicted through the command line.
  train_in_process('cifar', *flags, '--epochs=1', '--train_split=train[:3000]', '--eval_split=train[45000:45500]',
                   mock=False)
  from zoo.training import loop
  evaluation = loop.evaluate(workdir, data_dir, split_cache='')
  from zoo.data import tfds_source
  split = tfds_source.load_split('cifar10', 'train[45000:45500]', data_dir)
  np.save(tmp_path / 'images.npy', split['image'])
  np.save(tmp_path / 'labels.npy', split['label'])
  script = f"""
import json, numpy as np, zoo
trained = zoo.load({str(workdir)!r})
p = trained.predict(np.load({str(tmp_path / 'images.npy')!r}))
print(json.dumps({{'shape': list(p.shape), 'names': trained.class_names,
                  'accuracy': float(np.mean(p.argmax(1) == np.load({str(tmp_path / 'labels.npy')!r})))}}))
"""
  env = {k: v for k, v in os.environ.items() if k != 'TFDS_DATA_DIR'}
  fresh = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, env=dict(env, JAX_PLATFORMS='cpu'),
                         capture_output=True, text=True, timeout=120)
  assert fresh.returncode == 0, fresh.stderr[-3000:]
  result = last_json_line(fresh.stdout)
  assert result['shape'] == [500, 10]
  assert result['names'][:3] == ['airplane', 'automobile', 'bird']
  assert result['accuracy'] == evaluation['accuracy']
  Image.fromarray(split['image'][0]).resize((96, 80)).save(tmp_path / 'cifar.png')
  predicted = run_experiment('cifar', '--mode=predict', f'--workdir={workdir}', f'--image={tmp_path / "cifar.png"}',
                             mock=False)
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  assert last_json_line(predicted.stdout)['label'] in result['names']
