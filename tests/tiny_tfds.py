"""A TFDS dataset prepared inside the tests: PNG images, class labels and text, as CIFAR-10 and
IMDB hold them (its module is imported by name in subprocesses, so it has no test imports)."""
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
