"""TFDS datasets prepared inside the tests: `ZooTinyImages` holds PNG images, class labels and text
as CIFAR-10 and IMDB hold them, `ZooTinyColours` images with labels a model can learn (this module
is imported by name in subprocesses, so it has no test imports)."""
import numpy as np
import tensorflow_datasets as tfds


class ZooTinyImages(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(8, 8, 3)), 'label': tfds.features.ClassLabel(num_classes=3),
        'text': tfds.features.Text(), 'id': tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(40, 0), 'test': self._generate_examples(9, 1)}

  def _generate_examples(self, n, seed):
    rng = np.random.default_rng(seed)
    for i in range(n):
      yield i, {'image': rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), 'label': int(rng.integers(3)),
                'text': 'é review ' * int(rng.integers(0, 4)), 'id': f'{seed}_{i:03d}'}


class ZooTinyColours(tfds.core.GeneratorBasedBuilder):
  """Noise images whose label is their brightest colour channel: a pattern any model learns in a
  few epochs, so a test can tell a working read path from one that scrambles images or labels."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, supervised_keys=('image', 'label'), features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(24, 24, 3)),
        'label': tfds.features.ClassLabel(names=['red', 'green', 'blue'])}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(300, 0), 'test': self._generate_examples(90, 1)}

  def _generate_examples(self, n, seed):
    rng = np.random.default_rng(seed)
    for i in range(n):
      label = i % 3
      image = rng.integers(0, 160, (24, 24, 3))
      image[..., label] += 80
      yield i, {'image': image.astype(np.uint8), 'label': label}
