"""Variants of the n-gram recipe, trained one after the other in one process:
`python -m lab.ngram_sweep --flagfile=experiments/recipes/imdb_ngram.flags --data_dir=DIR
--train_split=... --eval_split=... --workdir=W --variants='[{"name": "lr01", "config": {"learning_rate": 0.01}}, ...]'`.

Each variant is a JSON object: `name` (its workdir `W/<name>`), `model` (settings of the model, as
`--model.NAME` sets them: `max_n`, `num_buckets`, `scale`, `alpha`, `use_ratios`), `rules`
(optimizer rules added to the run's, as `--rule` writes them: `["ratios:frozen"]`), `config` (fields
of the zoo's Config to override: `learning_rate`, `schedule`, `epochs`, `max_length`...) and `naive_bayes` (true: also evaluate the trained workdir's
model with its trainable weights zeroed, the Naive Bayes classifier it started from). One process
reads the data once per tokenizer setting (with the split cache) instead of once per variant, so a
sweep of many variants fits on a small CPU. Prints one JSON line per variant: eval accuracy and
seconds per epoch, the variant's seconds in all (training and evaluation, compiling included) and,
when asked, the Naive Bayes accuracy.

`--variants=ablation` is what each ingredient of the model adds: the recipe with its n-gram order
(uni- and bigrams) cut to 1 and raised to 3, the latter also without the Naive Bayes weighting (a
plain logistic regression on the binary bag), each NB-weighted one with its Naive Bayes accuracy
(docs/text.md).
"""
import dataclasses
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import launch, texts  # texts defines the flags, with IMDB's defaults
from zoo import inference
from zoo.data import open_dataset
from zoo.errors import ZooError
from zoo.training import loop

del texts
flags.adopt_module_key_flags(launch)
flags.DEFINE_string('variants', '[{"name": "ngram"}]',
                    'JSON list of variants, or the name of a preset: ablation (module docstring).')

# Named sets of variants, so that a study the docs quote is one flag away from being rerun.
PRESETS = {
    'ablation': [
        {'name': 'ngram_uni', 'model': {'max_n': 1}, 'naive_bayes': True},
        {'name': 'ngram', 'naive_bayes': True},
        {'name': 'ngram_tri', 'model': {'max_n': 3}, 'naive_bayes': True},
        {'name': 'ngram_tri_no_nb', 'model': {'max_n': 3, 'use_ratios': False}},
    ],
}


def naive_bayes_accuracy(workdir: str, config, data_dir: str) -> float:
  """The workdir's model with its trainable weights zeroed: the NB classifier it started from, which
  tells what training the weights adds to the ratios alone."""
  trained = inference.load(workdir)
  dataset = open_dataset(config, data_dir, workdir)
  split = dataset.load(config.eval_split)
  params = dict(trained.variables['params'], weights=jnp.zeros_like(trained.variables['params']['weights']))
  apply = jax.jit(lambda tokens: trained.model.apply({'params': params}, tokens)[:, 0])
  logits = np.concatenate([np.asarray(apply(split.inputs[i:i + 500])) for i in range(0, len(split.inputs), 500)])
  return float(np.mean((logits > 0) == split.labels))


def sweep(config, variants: list, workdir: str, data_dir: str) -> None:
  """Trains and evaluates each variant in `workdir/<name>`, printing its JSON line when done."""
  for variant in variants:
    name = variant['name']
    overrides = variant.get('config', {})
    unknown = sorted(set(overrides) - {field.name for field in dataclasses.fields(config)})
    if unknown:
      raise ZooError(f'variant {name!r}: the config has no field {", ".join(unknown)}; '
                     f'use the flags\' names without dashes, e.g. learning_rate')
    variant_config = dataclasses.replace(config, **overrides)
    variant_config = dataclasses.replace(
        variant_config, model_settings={**variant_config.model_settings, **variant.get('model', {})},
        rules=(*variant_config.rules, *variant.get('rules', ())))
    try:
      variant_config.validate(jax.device_count())
    except ZooError as error:
      raise ZooError(f'variant {name!r}: {error}') from None
    start = time.time()
    history = loop.train_and_evaluate(variant_config, f'{workdir}/{name}', data_dir)
    row = {'variant': variant, 'eval_accuracy_per_epoch': [h.get('eval_accuracy') for h in history],
           'seconds_per_epoch': [round(h['seconds'], 1) for h in history],
           'seconds': round(time.time() - start, 1)}
    if variant.get('naive_bayes'):
      row['naive_bayes_accuracy'] = naive_bayes_accuracy(f'{workdir}/{name}', variant_config, data_dir)
    print(json.dumps(row), flush=True)


def main(argv):
  del argv
  try:
    variants = PRESETS.get(flags.FLAGS.variants)
    if variants is None:
      try:
        variants = json.loads(flags.FLAGS.variants)
      except json.JSONDecodeError as error:
        raise ZooError(f'--variants is neither a preset ({", ".join(PRESETS)}) nor JSON ({error}); '
                       f'pass a preset or a list such as \'[{{"name": "ngram"}}]\'')
    sweep(launch.config_from_flags(), variants, flags.FLAGS.workdir, flags.FLAGS.data_dir)
  except ZooError as error:  # one line, as the other entry points print it
    print(f'error: {error}', file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
