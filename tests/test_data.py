import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from conftest import real_data_dir

from zoo.data import open_dataset, pipeline, tfds_source
from zoo.data.images import random_crop_and_flip, random_crop_and_flip_on_device
from zoo.errors import ZooError
from zoo.config import Config


def toy_split(n=100):
  return pipeline.ArraySplit(inputs=np.arange(n, dtype=np.int32)[:, None], labels=np.arange(n, dtype=np.int32))


def identity(inputs, noise):
  return inputs


def collect(batches):
  return [dict(b) for b in batches]


def test_cifar_from_tfds_mock_data_gives_scaled_batches(monkeypatch):
  monkeypatch.setattr(tfds_source, '_online', lambda: True)  # mock_data replaces the download
  with tfds.testing.mock_data(num_examples=64):
    dataset = open_dataset(Config(augment=True), None, None)
    split = dataset.load('train')
    assert split.inputs.shape == (64, 32, 32, 3) and split.inputs.dtype == np.uint8
    batch = next(pipeline.train_batches(split, dataset.preprocess, global_batch=16, seed=0, epoch=0,
                                        noise_per_example=dataset.noise_per_example))
  assert batch['inputs'].shape == (16, 32, 32, 3) and batch['inputs'].dtype == np.float32
  assert 0.0 <= batch['inputs'].min() and batch['inputs'].max() <= 1.0
  assert batch['label'].shape == (16,) and batch['label'].dtype == np.int32
  np.testing.assert_array_equal(batch['mask'], np.ones(16))


def test_misspelt_split_is_one_clear_error():
  # mock_data serves any split name, so this needs a real prepared dataset.
  dataset = open_dataset(Config(), real_data_dir('cifar10'), None)
  with pytest.raises(ZooError, match="split 'trian' .*available splits: train"):
    dataset.load('trian')


def test_real_cifar_slice_loads_as_uint8_images_with_every_class():
  split = open_dataset(Config(), real_data_dir('cifar10'), None).load('train[:1000]')
  assert split.inputs.shape == (1000, 32, 32, 3) and split.inputs.dtype == np.uint8
  assert set(np.unique(split.labels)) == set(range(10))


def test_unknown_dataset_is_one_clear_error():
  with pytest.raises(ZooError, match="unknown dataset 'mnsit': TFDS has no dataset of that name; pass"):
    open_dataset(Config(dataset='mnsit'), None, None)


def test_epoch_order_is_a_deterministic_function_of_seed_and_epoch():
  split = toy_split()
  order = lambda seed, epoch: np.concatenate([b['label'] for b in pipeline.train_batches(
      split, identity, global_batch=10, seed=seed, epoch=epoch)])
  np.testing.assert_array_equal(order(0, 0), order(0, 0))
  assert sorted(order(0, 0)) == list(range(100))  # a permutation: every example once per epoch
  assert not np.array_equal(order(0, 0), order(0, 1))
  assert not np.array_equal(order(0, 0), order(1, 0))


def test_a_resumed_epoch_sees_exactly_the_remaining_batches():
  split = toy_split()
  full = collect(pipeline.train_batches(split, identity, global_batch=10, seed=3, epoch=2, noise_per_example=2))
  tail = collect(pipeline.train_batches(split, identity, global_batch=10, seed=3, epoch=2, noise_per_example=2,
                                        start_step=4))
  assert len(tail) == len(full) - 4
  for a, b in zip(full[4:], tail):
    np.testing.assert_array_equal(a['label'], b['label'])


def test_processes_split_every_global_batch_without_overlap():
  split = toy_split()
  whole = collect(pipeline.train_batches(split, identity, global_batch=10, seed=0, epoch=0))
  parts = [collect(pipeline.train_batches(split, identity, global_batch=10, seed=0, epoch=0,
                                          process=pipeline.ProcessSlice(i, 2))) for i in range(2)]
  for step, batch in enumerate(whole):
    np.testing.assert_array_equal(batch['label'], np.concatenate([p[step]['label'] for p in parts]))


def test_augmentation_noise_is_per_global_example_so_processes_agree():
  record = lambda inputs, noise: tf.concat([tf.cast(inputs, tf.float32), noise], axis=1)
  split = toy_split(40)
  whole = collect(pipeline.train_batches(split, record, global_batch=8, seed=0, epoch=0, noise_per_example=3))
  half = collect(pipeline.train_batches(split, record, global_batch=8, seed=0, epoch=0, noise_per_example=3,
                                        process=pipeline.ProcessSlice(1, 2)))
  np.testing.assert_array_equal(whole[0]['inputs'][4:], half[0]['inputs'])
  assert whole[0]['inputs'][:, 1:].std() > 0.1  # real noise, not zeros


@pytest.mark.parametrize('num_examples, batch', [(100, 32), (96, 32), (7, 4)])
def test_eval_counts_every_example_exactly_once(num_examples, batch):
  batches = collect(pipeline.eval_batches(toy_split(num_examples), identity, global_batch=batch))
  labels = np.concatenate([b['label'] for b in batches])
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.sum() == num_examples
  assert sorted(labels[mask > 0]) == list(range(num_examples))
  assert all(len(b['label']) == batch for b in batches)  # padded, never ragged


def test_crop_and_flip_moves_pixels_as_the_noise_says():
  image = np.arange(32 * 32, dtype=np.int32).reshape(1, 32, 32, 1)
  # noise 4/9 -> offset 4 == PAD: the centre crop is the original image; flip coin < 0.5 mirrors.
  centre = np.array([[4.5 / 9, 4.5 / 9, 0.9]], np.float32)
  np.testing.assert_array_equal(random_crop_and_flip(tf.constant(image), tf.constant(centre)), image)
  mirrored = np.array([[4.5 / 9, 4.5 / 9, 0.1]], np.float32)
  np.testing.assert_array_equal(random_crop_and_flip(tf.constant(image), tf.constant(mirrored)),
                                image[:, :, ::-1])
  shifted = np.array([[0.0, 4.5 / 9, 0.9]], np.float32)  # 4 rows up: reflect padding on top
  out = random_crop_and_flip(tf.constant(image), tf.constant(shifted)).numpy()
  np.testing.assert_array_equal(out[0, 4:], image[0, :28])
  np.testing.assert_array_equal(out[0, 3], image[0, 1])


def test_crop_and_flip_on_device_equals_the_tf_data_version():
  images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
  _, noise = pipeline.epoch_plan(64, 64, seed=3, epoch=1, noise_per_example=3)
  expected = random_crop_and_flip(tf.constant(images), tf.constant(noise[0])).numpy()
  np.testing.assert_array_equal(np.asarray(random_crop_and_flip_on_device(images, noise[0])), expected)
  assert (expected != images).any()


def test_both_pipelines_preprocess_cifar_alike():
  config = Config(augment=True)
  dataset = open_dataset(config, None, None)
  images = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
  noise = np.random.default_rng(2).random((8, 3), dtype=np.float32)
  # (XLA may divide by 255 as a multiplication: the same to the last bit or one ulp.)
  np.testing.assert_allclose(np.asarray(dataset.preprocess_on_device(images, noise)),
                             dataset.preprocess(tf.constant(images), tf.constant(noise)).numpy(), rtol=1e-6)


def test_alternating_flip_mirrors_every_image_every_other_epoch():
  plans = [pipeline.epoch_plan(50, 10, seed=4, epoch=e, noise_per_example=3, alternating_columns=(2,))
           for e in range(4)]
  flips = []
  for order, noise in plans:
    flipped = np.zeros(50, bool)
    flipped[order.ravel()] = noise[..., 2].ravel() < 0.5
    flips.append(flipped)
  assert 15 < flips[0].sum() < 35  # a fair coin per image...
  np.testing.assert_array_equal(flips[1], ~flips[0])  # ...inverted in odd epochs
  np.testing.assert_array_equal(flips[2], flips[0])
  np.testing.assert_array_equal(flips[3], flips[1])
  crops = [noise[..., :2] for _, noise in plans]
  assert not np.array_equal(crops[0], crops[2])  # translations stay fresh every epoch


def test_images_of_varying_sizes_are_kept_apart_then_resized_to_one_size():
  from zoo.data import images
  rng = np.random.default_rng(0)
  decoded = [rng.integers(0, 256, (h, w, 1), dtype=np.uint8) for h, w in ((20, 30), (40, 24), (28, 28))]
  ragged = tfds_source._stack(decoded)  # as TFDS's reader gives a split of varying-size images
  assert ragged.dtype == object and len(ragged) == 3
  resized = images.resize_all(ragged, (28, 28, 1))
  assert resized.shape == (3, 28, 28, 1) and resized.dtype == np.uint8
  np.testing.assert_array_equal(resized[2], decoded[2])  # the one of the right size is kept as it is
  assert tfds_source._stack(decoded[2:] * 2).shape == (2, 28, 28, 1)  # one size: a plain array
