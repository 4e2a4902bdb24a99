"""CIFAR-10 image classification: `python -m experiments.cifar [--flagfile=experiments/recipes/cifar_*.flags]`.

`experiments.images` with CIFAR-10's defaults (the seed's recipe: SimpleCNN, Adam 1e-3, batch 32,
10 epochs). Recipes with their commands and measured results are in experiments/recipes/cifar_*.flags;
`--mode=predict --workdir=W --image=FILE` classifies image files.
"""
from absl import app, flags

from experiments import images, launch  # images defines the flags, with CIFAR-10's defaults

DEFAULTS = images.DEFAULTS
flags.adopt_module_key_flags(launch)  # --help lists the experiment's flags

if __name__ == '__main__':
  app.run(launch.run)
