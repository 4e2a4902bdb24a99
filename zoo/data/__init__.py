"""Datasets by the names `--dataset` accepts; each loads splits and preprocesses batches.

A dataset class takes (config, data_dir, workdir) and offers `model_kwargs()`, `load(split)` ->
ArraySplit, `preprocess(inputs, noise)` (TensorFlow, for tf.data), `preprocess_on_device(inputs,
noise)` (the same in jax.numpy, for splits held on the devices) and `noise_per_example` (random
numbers its augmentation draws per example; 0 for none) and `alternating_noise_columns` (those of
them that are per-run coins inverted every other epoch: `pipeline.epoch_plan`).
"""
import importlib

from zoo.errors import ZooError

# name -> 'module:class', imported on use: IMDB's tokenizer needs TensorFlow, CIFAR-10 on the
# device feed does not.
# <workdir>/dataset.json: the dataset's `describe()` (class names, input format), written when
# training starts, so that a trained model can be used with nothing but its workdir.
DESCRIPTION_FILE = 'dataset.json'

DATASETS = {'cifar10': 'zoo.data.cifar:Cifar10', 'imdb_reviews': 'zoo.data.text:ImdbReviews'}


def open_dataset(config, data_dir, workdir):
  if config.dataset not in DATASETS:
    raise ZooError(f'unknown dataset {config.dataset!r}; choose one of: {", ".join(sorted(DATASETS))}')
  module, name = DATASETS[config.dataset].split(':')
  return getattr(importlib.import_module(module), name)(config, data_dir, workdir)
