"""Prepared TFRecord files read without TensorFlow give exactly what tf.data gives."""
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import ROOT, real_data_dir
import tiny_tfds
from zoo.data import tfds_source
from zoo.errors import ZooError


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('tfds')
  tiny_tfds.ZooTinyImages(data_dir=str(data_dir)).download_and_prepare()
  return str(data_dir)


def read_with_tf_data(name, split, data_dir):
  builder = tfds.builder(name, data_dir=data_dir)
  chunks = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False).batch(1000)))
  return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}


def assert_same_arrays(ours, reference):
  assert sorted(ours) == sorted(reference)
  for key in reference:
    assert ours[key].dtype == reference[key].dtype and ours[key].shape == reference[key].shape, key
    np.testing.assert_array_equal(ours[key], reference[key])


@pytest.mark.parametrize('split', ['train', 'train[3:17]', 'train[-5:]', 'test', 'train[:10%]+test[2:4]'])
def test_tfrecords_read_without_tensorflow_equal_tf_data(prepared, split, monkeypatch):
  monkeypatch.setattr(tfds_source, 'RECORDS_PER_TASK', 3)  # many thread-pool tasks: their order is kept
  assert tfds_source._tfrecord_files(tfds.builder('zoo_tiny_images', data_dir=prepared), split)
  assert_same_arrays(tfds_source.load_split('zoo_tiny_images', split, prepared),
                     read_with_tf_data('zoo_tiny_images', split, prepared))


def test_reading_prepared_tfrecords_needs_no_tensorflow(prepared):
  code = ("import sys; sys.path.insert(0, 'tests'); import tiny_tfds  # registers the builder\n"
          "from zoo.data import tfds_source\n"
          f"arrays = tfds_source.load_split('zoo_tiny_images', 'train[:7]', {prepared!r})\n"
          "print(arrays['image'].shape, sorted(arrays), 'tensorflow' in sys.modules)\n")
  done = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "(7, 8, 8, 3) ['id', 'image', 'label', 'text'] False" in done.stdout


def test_a_truncated_record_file_is_one_clear_error(prepared, tmp_path):
  import shutil
  copy = tmp_path / 'tfds'
  shutil.copytree(prepared, copy)
  record_file = next(copy.rglob('*train.tfrecord*'))
  record_file.write_bytes(record_file.read_bytes()[:-100])
  with pytest.raises(ZooError, match="split 'train' of zoo_tiny_images in .* cannot be read .*prepare the dataset again"):
    tfds_source.load_split('zoo_tiny_images', 'train', str(copy))
  assert (next(copy.rglob('*test.tfrecord*'))).exists()  # nothing was removed


def test_mock_data_is_still_served_through_as_dataset(monkeypatch):
  monkeypatch.setattr(tfds_source, '_online', lambda: True)  # mock_data replaces the download
  with tfds.testing.mock_data(num_examples=5):
    arrays = tfds_source.load_split('cifar10', 'train', None)
  assert arrays['image'].shape == (5, 32, 32, 3)


def test_real_cifar_and_imdb_read_without_tensorflow_equal_tf_data():
  for name, split in (('cifar10', 'train[:1200]'), ('cifar10', 'train[49900:]'), ('imdb_reviews', 'train[:1100]')):
    data_dir = real_data_dir(name)
    assert_same_arrays(tfds_source.load_split(name, split, data_dir), read_with_tf_data(name, split, data_dir))
