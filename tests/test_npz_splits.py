"""Splits saved as .npz (zoo/data/npz_splits.py): exact round trips, and CIFAR-10 training where TensorFlow cannot be imported."""
import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

from conftest import ROOT, assert_one_line_error, last_json_line, real_data_dir
from zoo.data import npz_splits, sources
from zoo.errors import ZooError


def cifar_like(n: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  smooth = rng.integers(0, 256, (n, 8, 8, 3)).repeat(4, axis=1).repeat(4, axis=2)  # JPEG-friendly
  noise = rng.integers(-3, 4, smooth.shape)
  return {'image': np.clip(smooth + noise, 0, 255).astype(np.uint8), 'label': rng.integers(0, 10, n),
          'id': np.array([f'train_{i:05d}'.encode() for i in range(n)], dtype=object)}


@pytest.mark.parametrize('jpeg_quality', [0, 75])
def test_round_trip_is_exact(tmp_path, jpeg_quality):
  arrays = cifar_like(20)
  path = npz_splits.save(tmp_path / 'x.npz', arrays, {'split': 'train'}, jpeg_quality=jpeg_quality)
  loaded = npz_splits.load(path)
  assert sorted(loaded) == sorted(arrays)
  np.testing.assert_array_equal(loaded['image'], arrays['image'])
  np.testing.assert_array_equal(loaded['label'], arrays['label'])
  assert list(loaded['id']) == list(arrays['id'])
  assert ('image.jpeg' in np.load(path).files) == bool(jpeg_quality)


def test_a_changed_decoder_is_caught(tmp_path, monkeypatch):
  path = npz_splits.save(tmp_path / 'x.npz', cifar_like(4), {'split': 'train'}, jpeg_quality=75)
  decode = npz_splits._decode
  monkeypatch.setattr(npz_splits, '_decode', lambda blobs: np.minimum(decode(blobs), 254))
  with pytest.raises(ZooError, match='decodes JPEG differently'):
    npz_splits.load(path)


def test_sources_read_the_saved_split_and_refuse_a_colliding_one(tmp_path):
  arrays = cifar_like(6)
  npz_splits.save(npz_splits.split_path(tmp_path, 'cifar10', 'train[:6]'), arrays, {'split': 'train[:6]'})
  np.testing.assert_array_equal(sources.load_split('cifar10', 'train[:6]', str(tmp_path))['image'], arrays['image'])
  with pytest.raises(ZooError, match="holds split 'train\\[:6\\]', not 'train_:6_'"):
    sources.load_split('cifar10', 'train_:6_', str(tmp_path))


def run_without_tensorflow(tmp_path, module: str, *flags: str) -> subprocess.CompletedProcess:
  """`python -m module flags` in a Python where `import tensorflow` fails, as on a JAX-only machine."""
  blocker = tmp_path / 'site'
  blocker.mkdir(exist_ok=True)
  (blocker / 'sitecustomize.py').write_text(
      "import sys\nsys.modules['tensorflow'] = None\nsys.modules['tensorflow_datasets'] = None\n")
  env = dict(os.environ, PYTHONPATH=str(blocker), JAX_PLATFORMS='cpu', JAX_NUM_CPU_DEVICES='2')
  env.pop('XLA_FLAGS', None)
  return subprocess.run([sys.executable, '-m', module, *flags], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)


def test_cifar_trains_and_evaluates_without_tensorflow(tmp_path):
  data_dir = tmp_path / 'data'
  for split, seed in (('train[:64]', 0), ('train[64:96]', 1)):
    info = sources.DatasetInfo('cifar10', 'image', 'image', 'label', tuple('abcdefghij'), (32, 32, 3))
    npz_splits.save(npz_splits.split_path(data_dir, 'cifar10', split), cifar_like(64 if seed == 0 else 32, seed),
                  {'split': split, 'info': info.to_json()}, jpeg_quality=75)  # as datatools.save_splits writes it
  common = (f'--data_dir={data_dir}', f'--workdir={tmp_path / "w"}', '--eval_split=train[64:96]',
            '--compilation_cache=')
  trained = run_without_tensorflow(tmp_path, 'experiments.cifar', *common, '--train_split=train[:64]',
                                   '--epochs=1', '--batch_size=16', '--eval_batch_size=16', '--augment')
  assert trained.returncode == 0, trained.stderr[-3000:]
  assert last_json_line(trained.stdout)['epochs'] == 1
  evaluated = run_without_tensorflow(tmp_path, 'experiments.cifar', *common, '--mode=eval')
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert last_json_line(evaluated.stdout)['num_examples'] == 32
  assert json.loads((tmp_path / 'w' / 'dataset.json').read_text())['class_names'] == list('abcdefghij')
  missing = run_without_tensorflow(tmp_path, 'experiments.cifar', *common[:2], '--eval_split=test',
                                   '--mode=eval')
  assert_one_line_error(missing, "split 'test' of cifar10 is not saved", 'save it where TensorFlow is installed')
  assert 'have: train[64:96], train[:64]' in missing.stderr


def test_split_cache_serves_the_second_read_and_notices_a_reprepared_dataset(tmp_path, monkeypatch):
  prepared = tmp_path / 'tfds' / 'cifar10' / '3.0.2'
  prepared.mkdir(parents=True)
  (prepared / 'cifar10-train.tfrecord-00000-of-00001').write_bytes(b'v1')
  reads = []
  monkeypatch.setattr(sources, '_load_from_tfds', lambda *args: reads.append(args) or cifar_like(5, len(reads)))
  monkeypatch.setattr(sources, '_is_the_prepared_split', lambda arrays, *args: True)
  load = lambda: sources.load_split('cifar10', 'train[:5]', str(tmp_path / 'tfds'), str(tmp_path / 'cache'))
  first, second = load(), load()
  assert len(reads) == 1
  np.testing.assert_array_equal(first['image'], second['image'])
  (prepared / 'cifar10-train.tfrecord-00000-of-00001').write_bytes(b'v2, re-prepared')
  assert not np.array_equal(load()['image'], first['image']) and len(reads) == 2
  assert sources.load_split('cifar10', 'train[:5]', str(tmp_path / 'tfds'), '') is not None and len(reads) == 3


def test_split_cache_skips_data_without_prepared_files(tmp_path, monkeypatch):
  monkeypatch.setattr(sources, '_load_from_tfds', lambda *args: cifar_like(3))
  sources.load_split('cifar10', 'train', str(tmp_path / 'empty'), str(tmp_path / 'cache'))  # e.g. mock data
  sources.load_split('cifar10', 'train', None, str(tmp_path / 'cache'))  # $TFDS_DATA_DIR: mock_data's way in
  assert not (tmp_path / 'cache').exists()


def test_mock_data_is_never_cached_even_beside_a_prepared_dataset(tmp_path):
  """tfds.testing.mock_data serves random examples whatever the data dir holds (CI sets
  TFDS_DATA_DIR to a real one): caching them would feed later runs fake data."""
  data_dir = real_data_dir('cifar10')
  import tensorflow_datasets as tfds
  from zoo.data import tfds_source
  with mock.patch.object(tfds_source, '_online', lambda: True), tfds.testing.mock_data(num_examples=12):
    sources.load_split('cifar10', 'train[:8]', data_dir, str(tmp_path / 'cache'))
  assert not list((tmp_path / 'cache').rglob('*.npz'))
  real = sources.load_split('cifar10', 'train[:8]', data_dir, str(tmp_path / 'cache'))
  assert len(real['label']) == 8 and len(list((tmp_path / 'cache').rglob('*.npz'))) == 1


def test_split_cache_key_holds_the_cache_format_version(tmp_path, monkeypatch):
  prepared = tmp_path / 'tfds' / 'cifar10' / '3.0.2'
  prepared.mkdir(parents=True)
  (prepared / 'cifar10-train.tfrecord-00000-of-00001').write_bytes(b'v1')
  path = lambda: sources._cache_path(str(tmp_path / 'cache'), 'cifar10', 'train', str(tmp_path / 'tfds'))
  current = path()
  monkeypatch.setattr(sources, 'CACHE_FORMAT_VERSION', sources.CACHE_FORMAT_VERSION + 1)
  assert path() != current and path().parent == current.parent


def test_cache_folders_follow_xdg_cache_home(monkeypatch):
  from zoo import cache_dirs
  monkeypatch.setenv('XDG_CACHE_HOME', '/somewhere/cache')
  assert cache_dirs.default_dir('splits') == '/somewhere/cache/zoo/splits'
  for unusable in ('', 'relative/cache'):  # the freedesktop.org specification ignores both
    monkeypatch.setenv('XDG_CACHE_HOME', unusable)
    assert cache_dirs.default_dir('splits') == '~/.cache/zoo/splits'


@pytest.mark.parametrize('damage', ['truncated', 'not a zip', 'another program\'s npz'])
def test_an_unreadable_saved_split_is_named_in_one_line(tmp_path, damage):
  path = npz_splits.save(npz_splits.split_path(tmp_path, 'cifar10', 'train'), cifar_like(4), {'split': 'train'})
  if damage == 'truncated':
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
  elif damage == 'not a zip':
    path.write_bytes(b'not a zip file at all')
  else:
    np.savez(path, weights=np.zeros(3))  # a stray .npz without the zoo's metadata
  for read in (lambda: sources.load_split('cifar10', 'train', str(tmp_path)),
               lambda: sources.dataset_info('cifar10', str(tmp_path))):
    with pytest.raises(ZooError, match=r'train.npz is not a readable saved split .*; save the split again'):
      read()


def test_a_damaged_split_cache_entry_is_read_again_and_replaced(tmp_path, monkeypatch):
  prepared = tmp_path / 'tfds' / 'cifar10' / '3.0.2'
  prepared.mkdir(parents=True)
  (prepared / 'cifar10-train.tfrecord-00000-of-00001').write_bytes(b'v1')
  reads = []
  monkeypatch.setattr(sources, '_load_from_tfds', lambda *args: reads.append(args) or cifar_like(5))
  monkeypatch.setattr(sources, '_is_the_prepared_split', lambda arrays, *args: True)
  load = lambda: sources.load_split('cifar10', 'train[:5]', str(tmp_path / 'tfds'), str(tmp_path / 'cache'))
  first = load()
  cached, = (tmp_path / 'cache').rglob('*.npz')
  cached.write_bytes(cached.read_bytes()[:100])  # as a crash or a full disk may leave it
  np.testing.assert_array_equal(load()['image'], first['image'])
  assert len(reads) == 2  # read again from TFDS ...
  np.testing.assert_array_equal(npz_splits.load(cached)['image'], first['image'])  # ... and cached whole again
