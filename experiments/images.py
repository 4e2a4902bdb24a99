"""Image classification on any TFDS image dataset or a folder of your own images.

  python -m experiments.images --dataset=mnist                 # any TFDS image classification dataset
  python -m experiments.images --image_folder=DIR --model=simple_cnn   # DIR/<split>/<class>/<image>

Input shape, channels, classes and class names come from the dataset's TFDS metadata (or the
folder's class subfolders). Defaults are the seed's CIFAR-10 recipe (SimpleCNN, Adam 1e-3, batch
32, 10 epochs); recipes with their commands and measured results are in experiments/recipes/.
`--mode=predict --workdir=W --image=FILE` classifies image files.
"""
from absl import app, flags

from experiments import launch
from zoo.config import Config

DEFAULTS = Config(dataset='cifar10', model='simple_cnn', epochs=10, batch_size=32, optimizer='adam',
                  learning_rate=1e-3)

launch.define_flags(DEFAULTS)
flags.adopt_module_key_flags(launch)  # --help lists the experiment's flags

if __name__ == '__main__':
  app.run(launch.run)
