"""What each ingredient of the n-gram model adds: `python -m experiments.ngram_ablation
--flagfile=experiments/recipes/imdb_ngram.flags --data_dir=DIR --train_split=... --eval_split=...`.

Trains the recipe with the model's n-gram order (uni- and bigrams) cut to 1 and raised to 3, and
the latter without the Naive Bayes weighting (a plain logistic regression on the binary bag), each
in `<workdir>/<variant>`, and
evaluates every workdir's untrained Naive Bayes classifier (its weights zeroed) besides. Prints one
JSON line per variant: eval accuracy after each epoch.
"""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import launch, texts  # texts defines the flags, with IMDB's defaults
from zoo import inference
from zoo.data import open_dataset
from zoo.models import MODELS
from zoo.models.ngram import NgramClassifier
from zoo.training import loop

del texts
flags.adopt_module_key_flags(launch)


class Unigrams(NgramClassifier):
  max_n: int = 1


class UniToTrigrams(NgramClassifier):
  max_n: int = 3


class UniToTrigramsWithoutRatios(NgramClassifier):
  max_n: int = 3
  use_ratios: bool = False


VARIANTS = {'ngram_uni': Unigrams, 'ngram': NgramClassifier, 'ngram_tri': UniToTrigrams,
            'ngram_tri_no_nb': UniToTrigramsWithoutRatios}


def naive_bayes_accuracy(workdir, config) -> float:
  """The workdir's model with its trainable weights zeroed: the NB classifier it started from."""
  trained = inference.load(workdir)
  dataset = open_dataset(config, flags.FLAGS.data_dir, workdir)
  split = dataset.load(config.eval_split)
  params = dict(trained.variables['params'], weights=jnp.zeros_like(trained.variables['params']['weights']))
  apply = jax.jit(lambda tokens: trained.model.apply({'params': params}, tokens)[:, 0])
  logits = np.concatenate([np.asarray(apply(split.inputs[i:i + 500])) for i in range(0, len(split.inputs), 500)])
  return float(np.mean((logits > 0) == split.labels))


def main(argv):
  del argv
  config = launch.config_from_flags()
  for name, model in VARIANTS.items():
    MODELS[name] = model
    workdir = f'{flags.FLAGS.workdir}/{name}'
    history = loop.train_and_evaluate(dataclasses.replace(config, model=name), workdir, flags.FLAGS.data_dir)
    row = {'variant': name, 'eval_accuracy_per_epoch': [h.get('eval_accuracy') for h in history],
           'seconds_per_epoch': [h['seconds'] for h in history]}
    if model.use_ratios:
      row['naive_bayes_accuracy'] = naive_bayes_accuracy(workdir, dataclasses.replace(config, model=name))
    print(json.dumps(row), flush=True)


if __name__ == '__main__':
  app.run(main)
