"""CIFAR-10 image classification: `python -m experiments.cifar [--flagfile=experiments/recipes/...]`.

Defaults are the seed's recipe (SimpleCNN, Adam 1e-3, batch 32, 10 epochs). Recipes with their
commands and measured results are in experiments/recipes/cifar_*.flags.
"""
from absl import app, flags

from experiments import launch
from zoo.training.config import Config

launch.define_flags(Config(dataset='cifar10', model='simple_cnn', epochs=10, batch_size=32,
                           optimizer='adam', learning_rate=1e-3))
flags.adopt_module_key_flags(launch)  # --help lists the experiment's flags

if __name__ == '__main__':
  app.run(launch.run)
