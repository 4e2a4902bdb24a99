"""Variants of the n-gram recipe (and of other text recipes, and their ensembles), compared by k-fold
cross-validation over the whole training split, in one process:

  python -m lab.ngram_sweep --flagfile=experiments/recipes/imdb_ngram.flags --data_dir=DIR \
    --workdir=W --variants='[{"name": "recipe"}, {"name": "trigrams", "model": {"max_n": 3}}, ...]'

The protocol (docs/text.md): `--train_split` (a whole split, IMDB's `train`) is cut into `--folds`
folds; fold i trains on the others (vocabulary, Naive Bayes ratios, owners, weights) and is
evaluated on its own texts, the same folds for every variant, so every text is evaluated exactly
once (`--eval_split` is not used). With `--fold_groups=shared_words` (the default) texts that share 4
or more rare words (in 2 to 30 texts: names, titles; on IMDB mostly reviews of one film, and the test
split's films are new) stay in one fold (`shared_word_groups`); with `none` the folds are contiguous
slices of the split's stored order (the first 5,000 texts, the next...). The folds are written once as
saved splits under `W/folds` (`zoo.data.npz_splits`), so a fold's texts are those the split held
when the sweep began, whichever machine trains on them. A variant's figure is the mean of its
folds' accuracies with the standard error of that mean (sample standard deviation over the folds /
sqrt(folds)), and its difference from the `--reference` variant with the standard error of the
paired per-fold differences, much smaller than either mean's: the folds are shared, so most of
their spread cancels.

Each variant is a JSON object with a `name` and one of
- a zoo run: `model` (settings of the model, as `--model.NAME` sets them), `rules` (optimizer rules
  added to the run's, as `--rule` writes them), `config` (fields of the zoo's Config: `learning_rate`,
  `epochs`, `seed`...) and `recipe` (another recipe's name, e.g. `imdb_bilstm`, whose flags replace
  the sweep's); trained by the zoo's own loop in `W/fold<i>/<name>` (its checkpoints deleted once
  its eval probabilities are kept);
- `baseline` (fields of `lab.nbsvm_baseline.BASELINE_FIELDS`: `max_n`, `C`, `alpha`, `beta`,
  `min_documents`): scikit-learn's NBSVM-LR on the same folds;
- `ensemble`: a list of earlier variants' names (optional `weights`, one per member, default equal):
  the weighted mean of their probabilities on each fold, nothing trained.
Every (fold, variant) keeps its probabilities of the eval fold's texts in
`W/probabilities/<name>.fold<i>.npy` and appends one JSON line to `W/results.jsonl` (accuracy, per
epoch for a zoo run, seconds, and the exact configuration); a rerun with the same `--workdir` reuses
the lines whose configuration matches and runs only what is new, so variants can be added to a sweep
one at a time, and the probabilities of runs made elsewhere (another machine) can be copied in.
Prints each new line as it finishes, then one summary line per variant and a Markdown table.
`--variants=ablation` is what each ingredient of the model adds (docs/text.md).
"""
import collections
import dataclasses
import importlib
import itertools
import json
import shutil
import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

from experiments import launch
from zoo import inference
from zoo import workdir as workdir_lib
from zoo.config import Config
from zoo.data import npz_splits, sources
from zoo.data.text import decode
from zoo.data.tokenizer import split_words
from zoo.errors import ZooError
from zoo.training import loop


def define_flags() -> None:
  """The IMDB experiment's flags (experiments.texts defines them on import, with IMDB's defaults) and
  the sweep's own: defined when the sweep runs, not when it is imported, so that a process that
  imported another experiment's flags (a test worker) can still import the sweep."""
  importlib.import_module('experiments.texts')
  flags.adopt_module_key_flags(launch)
  flags.DEFINE_string('variants', '[{"name": "ngram"}]',
                      'JSON list of variants, or the name of a preset: ablation (module docstring).')
  flags.DEFINE_integer('folds', 5, 'Cross-validation folds over --train_split (at least 2).')
  flags.DEFINE_string('reference', None, 'The variant the others are compared with, fold by fold (default: '
                      'the first).')
  flags.DEFINE_enum('fold_groups', 'shared_words', ['shared_words', 'none'],
                    'shared_words: texts that share several rare words (mostly reviews of one film) stay in one '
                    'fold; none: contiguous slices of the split (module docstring).')


RESULTS_FILE = 'results.jsonl'
MIN_SHARED_WORDS = 4  # links two texts (shared_word_groups)
MAX_TEXTS_PER_WORD = 30  # a rare word is in 2 to this many texts: IMDB holds at most 30 reviews per film
# Named sets of variants, so that a study the docs quote is one flag away from being rerun.
PRESETS = {
    'ablation': [
        {'name': 'recipe'},
        {'name': 'unigrams', 'model': {'max_n': 1}},
        {'name': 'naive_bayes', 'rules': ['.*:frozen'], 'config': {'epochs': 1}},
        {'name': 'plain_hashing', 'model': {'min_documents': 0}},
        {'name': 'nbsvm_lr', 'baseline': {'max_n': 2, 'C': 0.1}},
    ],
}


@dataclasses.dataclass(frozen=True)
class Fold:
  """One fold: the zoo's split names for its two parts (saved in `data_dir`) and the rows of the
  whole split it evaluates."""
  train_split: str
  eval_split: str
  eval_rows: np.ndarray
  data_dir: str | None


def shared_word_groups(texts: list[str], min_shared: int = MIN_SHARED_WORDS,
                       max_texts: int = MAX_TEXTS_PER_WORD) -> np.ndarray:
  """A group id per text: texts that share `min_shared` or more rare words (in 2 to `max_texts`
  texts: names, titles, a film's own vocabulary) are linked, and each connected set is one group.
  On IMDB two reviews sharing 4 such words agree in label far more often than two random ones:
  mostly reviews of one film, which the test split never shares with the training split."""
  words = [set(split_words(text)) for text in texts]
  counts = collections.Counter(word for bag in words for word in bag)
  postings = collections.defaultdict(list)
  for row, bag in enumerate(words):
    for word in bag:
      if 2 <= counts[word] <= max_texts:
        postings[word].append(row)
  shared = collections.Counter()
  for rows in postings.values():
    shared.update(itertools.combinations(rows, 2))
  parent = list(range(len(texts)))  # union-find over the linked pairs

  def root(row):
    while parent[row] != row:
      parent[row] = parent[parent[row]]
      row = parent[row]
    return row

  for (a, b), count in shared.items():
    if count >= min_shared:
      first, second = sorted((root(a), root(b)))
      parent[second] = first
  return np.array([root(row) for row in range(len(texts))])


def fold_of_each_text(texts: list[str], folds: int, grouped: bool) -> np.ndarray:
  """Each text's fold: contiguous slices of the stored order, or (`grouped`) whole groups of
  `shared_word_groups`, largest first, each into the fold with the fewest texts so far."""
  if not grouped:
    return np.arange(len(texts)) * folds // len(texts)
  groups = shared_word_groups(texts)
  ids, first, sizes = np.unique(groups, return_index=True, return_counts=True)
  assignment, filled = {}, [0] * folds
  for index in sorted(range(len(ids)), key=lambda i: (-sizes[i], first[i])):
    fold = min(range(folds), key=lambda f: (filled[f], f))
    assignment[ids[index]] = fold
    filled[fold] += sizes[index]
  return np.array([assignment[g] for g in groups])


def save_folds(split: str, arrays: dict, fold_of_row: np.ndarray, kind: str, info, out_dir: Path) -> list[Fold]:
  """The folds as saved splits `<split>-<kind>-<i>-of-<k>-{train,eval}` under `out_dir`, which the zoo
  reads through `--data_dir=out_dir` (written once; a rerun reads them)."""
  folds, result = int(fold_of_row.max()) + 1, []
  for fold in range(folds):
    names = {part: f'{split}-{kind}-{fold}-of-{folds}-{part}' for part in ('train', 'eval')}
    for part, rows in (('train', fold_of_row != fold), ('eval', fold_of_row == fold)):
      path = npz_splits.split_path(out_dir, info.name, names[part])
      if not path.exists():
        npz_splits.save(path, {key: values[rows] for key, values in arrays.items()},
                        {'dataset': info.name, 'split': names[part], 'source': f'{split}, {kind} folds',
                         'examples': int(rows.sum()), 'info': info.to_json()}, compress=False)
    result.append(Fold(names['train'], names['eval'], np.flatnonzero(fold_of_row == fold), str(out_dir)))
  return result


def check_variants(variants) -> None:
  """One error line for a malformed list, before anything trains."""
  if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
    raise ZooError('--variants must be a JSON list of objects; pass e.g. \'[{"name": "ngram"}]\'')
  names = [v.get('name') for v in variants]
  if not variants or None in names or len(set(names)) != len(names):
    raise ZooError('--variants must be a non-empty list of objects with distinct "name"s; pass e.g. '
                   '\'[{"name": "recipe"}, {"name": "trigrams", "model": {"max_n": 3}}]\'')
  from lab import nbsvm_baseline
  for index, variant in enumerate(variants):
    unknown = sorted(set(variant.get('baseline', {})) - set(nbsvm_baseline.BASELINE_FIELDS))
    if unknown:
      raise ZooError(f'variant {variant["name"]!r}: the baseline has no field {", ".join(unknown)}; '
                     f'use {", ".join(nbsvm_baseline.BASELINE_FIELDS)}')
    members = variant.get('ensemble', [])
    missing = [m for m in members if m not in names[:index]]
    if missing:
      raise ZooError(f'variant {variant["name"]!r}: its ensemble names {", ".join(missing)}, not an earlier '
                     'variant; list the members before the ensemble')
    if len(variant.get('weights', members)) != len(members):
      raise ZooError(f'variant {variant["name"]!r}: {len(variant["weights"])} weights for {len(members)} '
                     'members; give one weight per member')


def run_config(config, variant: dict, fold: Fold):
  """The zoo Config of one (fold, variant) run, validated."""
  name = variant['name']
  base = config
  if 'recipe' in variant:
    recipe = launch.read_recipe(launch.RECIPES / f'{variant["recipe"]}.flags')
    base = dataclasses.replace(recipe, **{f: getattr(config, f) for f in Config.fields_with_role('runtime')})
  overrides = variant.get('config', {})
  unknown = sorted(set(overrides) - {field.name for field in dataclasses.fields(base)})
  if unknown:
    raise ZooError(f'variant {name!r}: the config has no field {", ".join(unknown)}; '
                   f'use the flags\' names without dashes, e.g. learning_rate')
  result = dataclasses.replace(base, **overrides)
  result = dataclasses.replace(
      result, model_settings={**result.model_settings, **variant.get('model', {})},
      rules=(*result.rules, *variant.get('rules', ())), dataset=config.dataset,
      train_split=fold.train_split, eval_split=fold.eval_split, keep_checkpoints=1)
  try:
    result.validate(jax.device_count())
  except ZooError as error:
    raise ZooError(f'variant {name!r}: {error}') from None
  return result


def spec_of(config, variant: dict, fold: Fold) -> dict:
  """What a (fold, variant)'s result depends on: a results line is reused only when this matches."""
  if 'baseline' in variant:
    return {'baseline': variant['baseline'], 'eval_split': fold.eval_split}
  if 'ensemble' in variant:
    return {'ensemble': variant['ensemble'], 'weights': variant.get('weights'), 'eval_split': fold.eval_split}
  resolved = run_config(config, variant, fold)
  return json.loads(json.dumps({f: getattr(resolved, f) for f in Config.fields_with_role('run', 'eval')}))


class Sweep:
  """The folds of one split and what every variant scored on them."""

  def __init__(self, config, folds: int, grouped: bool, workdir: Path, data_dir):
    self.config, self.workdir = config, workdir
    info = sources.dataset_info(config.dataset, data_dir)
    arrays = sources.load_split(config.dataset, config.train_split, data_dir, config.split_cache)
    self.texts, self.labels = decode(arrays[info.input_key]), np.asarray(arrays[info.label_key])
    kind = 'grouped' if grouped else 'contiguous'
    kept = workdir / 'folds' / f'{config.train_split}-{kind}-of-{folds}.npy'  # grouping takes minutes: once
    if kept.exists():
      fold_of_row = np.load(kept)
    else:
      fold_of_row = fold_of_each_text(self.texts, folds, grouped)
      kept.parent.mkdir(parents=True, exist_ok=True)
      np.save(kept, fold_of_row)
    self.folds = save_folds(config.train_split, arrays, fold_of_row, kind, info, workdir / 'folds')
    self._bags = {}

  def probabilities_path(self, name: str, index: int) -> Path:
    return self.workdir / 'probabilities' / f'{name}.fold{index}.npy'

  def run(self, variant: dict, index: int) -> dict:
    """Trains and evaluates one (fold, variant), keeps its probabilities; returns its results line."""
    start, fold, row = time.time(), self.folds[index], {}
    if 'baseline' in variant:
      probabilities = self._baseline(variant['baseline'], fold)
    elif 'ensemble' in variant:
      weights = np.asarray(variant.get('weights', [1.0] * len(variant['ensemble'])), np.float64)
      members = np.stack([np.load(self.probabilities_path(m, index)) for m in variant['ensemble']])
      probabilities = np.tensordot(weights / weights.sum(), members, 1)
    else:
      config = run_config(self.config, variant, fold)
      run_dir = self.workdir / f'fold{index}' / variant['name']
      history = loop.train_and_evaluate(config, str(run_dir), fold.data_dir)
      row['accuracy_per_epoch'] = [h.get('eval_accuracy') for h in history]
      probabilities = inference.load(run_dir).predict([self.texts[r] for r in fold.eval_rows], 500)[:, 1]
      shutil.rmtree(run_dir / workdir_lib.CHECKPOINT_DIR)  # hundreds of MB per sweep; the history stays
    path = self.probabilities_path(variant['name'], index)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(probabilities, np.float32))
    row['accuracy'] = float(np.mean((probabilities > 0.5) == self.labels[fold.eval_rows]))
    row['seconds'] = round(time.time() - start, 1)
    return row

  def _baseline(self, fields: dict, fold: Fold) -> np.ndarray:
    from lab import nbsvm_baseline
    fields = {**nbsvm_baseline.BASELINE_FIELDS, **fields}
    if fields['max_n'] not in self._bags:
      self._bags[fields['max_n']] = nbsvm_baseline.vectorize(self.texts, fields['max_n'])
    held_out = np.zeros(len(self.labels), bool)
    held_out[fold.eval_rows] = True
    return nbsvm_baseline.fold_probabilities(
        self._bags[fields['max_n']], self.labels, np.flatnonzero(~held_out), np.flatnonzero(held_out),
        C=fields['C'], alpha=fields['alpha'], beta=fields['beta'], min_documents=fields['min_documents'])


def summary(variants: list, rows: dict, reference: str, folds: int) -> list[dict]:
  """Per variant: mean accuracy over the folds, its standard error, and the paired difference from
  `reference` with its standard error (the per-fold differences' spread / sqrt(folds))."""
  base = np.array([rows[(fold, reference)]['accuracy'] for fold in range(folds)])
  lines = []
  for variant in variants:
    accuracies = np.array([rows[(fold, variant['name'])]['accuracy'] for fold in range(folds)])
    differences = accuracies - base
    lines.append({'variant': variant['name'], 'accuracy': round(float(accuracies.mean()), 5),
                  'standard_error': round(float(accuracies.std(ddof=1) / np.sqrt(folds)), 5),
                  'minus_reference': round(float(differences.mean()), 5),
                  'minus_reference_standard_error': round(float(differences.std(ddof=1) / np.sqrt(folds)), 5),
                  'folds': [round(float(a), 4) for a in accuracies],
                  'seconds_per_fold': round(float(np.mean([rows[(f, variant['name'])]['seconds']
                                                           for f in range(folds)])), 1)})
  return lines


def markdown(lines: list[dict], reference: str) -> str:
  table = [f'| variant | CV accuracy | minus {reference} (paired SE) | folds | seconds per fold |',
           '| --- | --- | --- | --- | --- |']
  for line in lines:
    folds = ', '.join(f'{100 * a:.2f}' for a in line['folds'])
    table.append(f'| {line["variant"]} | {100 * line["accuracy"]:.2f} ± {100 * line["standard_error"]:.2f} % '
                 f'| {100 * line["minus_reference"]:+.2f} ({100 * line["minus_reference_standard_error"]:.2f}) '
                 f'| {folds} | {line["seconds_per_fold"]} |')
  return '\n'.join(table)


def sweep(config, variants: list, folds: int, workdir, data_dir, reference: str | None = None,
          grouped: bool = True) -> list[dict]:
  """Runs every (fold, variant) not yet in `workdir/results.jsonl`; returns the summary lines."""
  check_variants(variants)
  if not workdir:
    raise ZooError('the sweep needs a --workdir for its runs and results; pass --workdir=DIR')
  if folds < 2:
    raise ZooError(f'--folds={folds}: cross-validation needs at least 2 folds; pass --folds=5')
  if config.text_folder or config.image_folder or '[' in config.train_split or '+' in config.train_split:
    raise ZooError(f'--train_split={config.train_split!r}: the folds are cut from a whole split of a TFDS '
                   'dataset; pass its name, e.g. --train_split=train, and no --text_folder')
  reference = reference or variants[0]['name']
  if reference not in [v['name'] for v in variants]:
    raise ZooError(f'--reference={reference!r} is not one of the variants; pass one of their names')
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  results = workdir / RESULTS_FILE
  done = [json.loads(line) for line in results.read_text().splitlines() if line] if results.exists() else []
  state = Sweep(config, folds, grouped, workdir, data_dir)
  rows = {}
  for index, fold in enumerate(state.folds):
    for variant in variants:
      spec = spec_of(config, variant, fold)
      found = [r for r in done if r['fold'] == index and r['variant'] == variant['name'] and r['spec'] == spec]
      if found and state.probabilities_path(variant['name'], index).exists():
        rows[(index, variant['name'])] = found[-1]
        continue
      row = {'fold': index, 'variant': variant['name'], **state.run(variant, index), 'spec': spec}
      rows[(index, variant['name'])] = row
      with results.open('a') as file:
        file.write(json.dumps(row) + '\n')
      print(json.dumps({k: v for k, v in row.items() if k != 'spec'}), flush=True)
  lines = summary(variants, rows, reference, folds)
  for line in lines:
    print(json.dumps(line), flush=True)
  print(markdown(lines, reference), flush=True)
  return lines


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
    sweep(launch.config_from_flags(), variants, flags.FLAGS.folds, flags.FLAGS.workdir, flags.FLAGS.data_dir,
          flags.FLAGS.reference, flags.FLAGS.fold_groups == 'shared_words')
  except ZooError as error:  # one line, as the other entry points print it
    print(f'error: {error}', file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == '__main__':
  define_flags()
  app.run(main)
