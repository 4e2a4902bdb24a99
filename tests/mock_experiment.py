"""Runs an experiment's command line on `tfds.testing.mock_data` (random examples, no files).

usage: python tests/mock_experiment.py cifar|imdb [flags...]; MOCK_EXAMPLES sets examples per split.
"""
import importlib
import os
import sys

# scikit-learn is installed for the tests alone (tests/test_report.py compares with it); Keras,
# which `import tensorflow` loads, imports it when it is there, a second a run. Hidden, a mock run
# imports what it imports in a user's installation.
sys.modules['sklearn'] = None

import tensorflow_datasets as tfds
from absl import app

from experiments import launch
from zoo.data import sources, tfds_source

if __name__ == '__main__':
  importlib.import_module(f'experiments.{sys.argv.pop(1)}')  # defines the experiment's flags
  tfds_source._online = lambda: True  # mock_data replaces the download itself; no network is used
  sources._cache_path = lambda *args: None  # mock examples are neither cached nor served from the cache
  with tfds.testing.mock_data(num_examples=int(os.environ.get('MOCK_EXAMPLES', '96'))):
    app.run(launch.run)
