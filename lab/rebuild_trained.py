"""Rebuilds the models shipped inside the package (`zoo/trained/<dataset>/<model>/`) from their
recipes, on a prepared TFDS directory:

  python -m lab.rebuild_trained --data_dir=DIR [--only=cifar10/simple_cnn,...] [--workdirs=W]

Each is trained on the first 90 % of `train` and evaluated on the rest (the test splits are judged
elsewhere, so the card's figures are honest held-out ones), packed with float16 variables
(`zoo.packed`), and given a model card: what it is, its data, this command with the commit, the
hardware and the time it took, its validation report, how far float16 moves its predictions from
float32 on the whole validation slice, its intended use, limits and licenses. Prints one JSON line
per model.
"""
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from experiments import launch
from zoo import packed
from zoo.data import open_dataset
from zoo.training import loop

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Spec:
  name: str        # <dataset>/<model>, what zoo.load takes
  recipe: str      # experiments/recipes/<recipe>.flags
  train: str
  validation: str
  what: str        # one line for the card
  data: str
  limits: str
  changes: tuple = ()  # (field, value, why): what the build changes in the recipe, and why


CIFAR_DATA = ('CIFAR-10 (Krizhevsky 2009): 32x32 colour photographs of 10 classes. The copy this was trained on '
              'had been through a JPEG round trip (quality 75), so its images are slightly blurred and '
              'blocky; a model trained on it scores a few points lower on the original PNG images.')
IMDB_DATA = ('IMDB Large Movie Review Dataset (Maas et al. 2011): English movie reviews from imdb.com, '
             'labelled negative (rating 4 or less of 10) or positive (7 or more).')
SPECS = (
    Spec('cifar10/simple_cnn', 'cifar_seed', 'train[:45000]', 'train[45000:]',
         "The seed's Keras CNN (Conv32-pool-Conv64-pool-Conv64-Dense64-Dense10), its recipe: Adam 1e-3, batch 32, "
         '10 epochs, no augmentation.', CIFAR_DATA,
         'Inputs are resized to 32x32: larger photos lose their detail. Trained on 10 everyday classes; anything '
         'else is still given one of them.'),
    Spec('cifar10/airbench', 'cifar_airbench_muon', 'train[:45000]', 'train[45000:]',
         'The airbench94_muon network and recipe (Muon for the filters, 8 epochs, batch 2000, test-time '
         'augmentation of 6 views).', CIFAR_DATA,
         'Inputs are resized to 32x32: larger photos lose their detail. Trained on 10 everyday classes; anything '
         'else is still given one of them.',
         changes=(('accumulate_steps', 2, 'each step of 2000 images as two micro-batches of 1000: the same '
                   'gradient in half the memory (a peak of 7.2 instead of 12 GB on a CPU), BatchNorm normalising each '
                   'micro-batch by its own statistics'),)),
    Spec('imdb_reviews/lstm', 'imdb_seed', 'train[:22500]', 'train[22500:]',
         "The seed's Keras LSTM (Embedding 16 -> LSTM 32 -> Dense 1), its recipe: Adam 1e-3, batch 32, 5 epochs, "
         '10,000 words, 200 tokens.', IMDB_DATA,
         'Reads the first 200 words of a review; English only; a review of something other than a film is '
         'outside what it saw.'),
    Spec('imdb_reviews/ngram', 'imdb_ngram', 'train[:22500]', 'train[22500:]',
         'The default text recipe: a Naive-Bayes-weighted bag of hashed uni- and bigrams (each bucket owned by '
         'an n-gram of 2 or more training reviews) with trained weights.',
         IMDB_DATA,
         'Reads the first 1,200 words of a review; English only; a review of something other than a film is '
         'outside what it saw.'),
)

flags.DEFINE_string('data_dir', None, 'A prepared TFDS directory holding cifar10 and imdb_reviews.', required=True)
flags.DEFINE_list('only', [], 'Names to rebuild (default: all).')
flags.DEFINE_string('commit', None, 'The commit the cards name (default: `git rev-parse` here; give it where '
                    'the tree was copied without its .git).')
flags.DEFINE_string('workdirs', None, 'Where the training runs are kept (default: a temporary folder, removed).')
FLAGS = flags.FLAGS


def _commit() -> str:
  if FLAGS.commit:
    return FLAGS.commit
  try:
    return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


def _hardware() -> str:
  """What trained it: the accelerator JAX ran on, else the CPU's model and cores."""
  import jax
  if jax.default_backend() != 'cpu':
    return f'{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend().upper()})'
  try:
    lines = subprocess.run(['lscpu'], capture_output=True, text=True, check=True).stdout.splitlines()
    model = next(line.split(':', 1)[1].strip() for line in lines if line.startswith('Model name'))
  except (OSError, subprocess.CalledProcessError, StopIteration):
    model = platform.processor() or platform.machine()
  return f'{os.cpu_count()}-core {model} CPU'


def _agreement(workdir: Path, folder: Path, config, data_dir: str) -> dict:
  """float16 against float32 on the whole validation slice: top-1 agreement, largest probability gap."""
  import zoo
  full, half = zoo.load(workdir), zoo.load(folder)
  dataset = open_dataset(config, data_dir, workdir)
  split = dataset.load(config.eval_split)
  if dataset.kind == 'text':
    raw = [t.decode() if isinstance(t, bytes) else str(t) for t in dataset.texts(config.eval_split)]
  else:
    raw = split.inputs
  p_full, p_half = full.predict(raw), half.predict(raw)
  return {'top1_agreement': float(np.mean(p_full.argmax(1) == p_half.argmax(1))),
          'max_probability_difference': float(np.abs(p_full - p_half).max()), 'examples': len(raw)}


def _card(spec: Spec, config, evaluation: dict, agreement: dict, seconds: float, command: str) -> str:
  rows = '\n'.join(f'| {name} | {v["precision"]:.4f} | {v["recall"]:.4f} | {v["f1"]:.4f} | {v["support"]} |'
                   for name, v in evaluation['per_class'].items())
  return f"""# {spec.name}

{spec.what} A model of the JAX model zoo: `zoo.load('{spec.name}')`.

## Data
{spec.data} Trained on `{spec.train}` of `train`; every figure below is on `{spec.validation}`, which
training never saw. The `test` split is judged elsewhere.

## How it was built
`{command}` at commit {_commit()}, on a {_hardware()}, {time.strftime('%Y-%m-%d')}: {seconds / 60:.1f} minutes
for training and evaluation. Recipe: `experiments/recipes/{spec.recipe}.flags`, seed {config.seed}{''.join(f'; --{field}={value}: {why}' for field, value, why in spec.changes)}.

## Validation figures (`{spec.validation}`, {evaluation['num_examples']} examples, step {evaluation['step']})
- accuracy: {evaluation['accuracy']:.4f}
- macro F1: {evaluation['macro_f1']:.4f}
- expected calibration error (15 bins): {evaluation['ece']:.4f}

| class | precision | recall | F1 | support |
| --- | --- | --- | --- | --- |
{rows}

Stored as float16 (half the size of float32): on all {agreement['examples']} validation examples its top
class agrees with the float32 model's on {agreement['top1_agreement'] * 100:.2f} %, and no class probability
differs by more than {agreement['max_probability_difference']:.4f}.

## Intended use and limits
Teaching, demos and a starting point for fine-tuning (`--init_from={spec.name}`). {spec.limits}
Not for decisions about people.

## Licenses
Code: Apache-2.0 (the zoo). Data: {'CIFAR-10 is distributed by its authors without a formal licence; cite '
'Krizhevsky (2009), "Learning Multiple Layers of Features from Tiny Images".' if spec.name.startswith('cifar10')
else 'the IMDB dataset is distributed by its authors for research; cite Maas et al. (2011), "Learning Word Vectors '
'for Sentiment Analysis", ACL.'}
"""


def rebuild(spec: Spec, data_dir: str, root: Path) -> dict:
  config = launch.read_recipe(launch.RECIPES / f'{spec.recipe}.flags')
  config = dataclasses.replace(config, train_split=spec.train, eval_split=spec.validation, tensorboard=False,
                               **{field: value for field, value, _ in spec.changes})
  workdir = root / spec.name.replace('/', '_')
  start = time.perf_counter()
  loop.train_and_evaluate(config, workdir, data_dir)
  evaluation = loop.evaluate(workdir, data_dir)
  seconds = time.perf_counter() - start
  target = packed.SHIPPED / spec.name
  with tempfile.TemporaryDirectory() as scratch:
    trial = packed.write_folder(workdir, Path(scratch) / 'trial', dtype='float16')
    agreement = _agreement(workdir, trial, config, data_dir)
  command = f'python -m lab.rebuild_trained --data_dir=DIR --only={spec.name}'
  card = _card(spec, config, evaluation, agreement, seconds, command)
  shutil.rmtree(target, ignore_errors=True)
  packed.write_folder(workdir, target, dtype='float16', card=card)
  return {'name': spec.name, 'accuracy': evaluation['accuracy'], **agreement, 'minutes': round(seconds / 60, 1),
          'megabytes': round(sum(p.stat().st_size for p in target.iterdir()) / 2 ** 20, 2)}


def main(argv):
  del argv
  specs = [s for s in SPECS if not FLAGS.only or s.name in FLAGS.only]
  root = Path(FLAGS.workdirs) if FLAGS.workdirs else Path(tempfile.mkdtemp(prefix='rebuild-'))
  try:
    for spec in specs:
      print(json.dumps(rebuild(spec, FLAGS.data_dir, root)), flush=True)
  finally:
    if not FLAGS.workdirs:
      shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
  app.run(main)
