"""The one place where a Config becomes what runs: the model, its optimizer, its train state and
its jitted step functions.

Training (`loop.py` through the feeds), evaluation, the benchmark and `zoo.load` all build here, so
the step the benchmark times is the step training runs (airbench's lookahead and frozen whitening
included), and a model is created the same way wherever it is restored.
"""
import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np

from zoo import models
from zoo import workdir as workdir_lib
from zoo.config import Config
from zoo.data import open_dataset
from zoo.data.sources import DatasetInfo
from zoo.errors import ZooError
from zoo.training import steps
from zoo.training.optimizers import create_optimizer


log = logging.getLogger('zoo')


def create_model(config: Config, model_kwargs: dict):
  """The config's registered model with the dataset's dimensions (`dataset.model_kwargs()`)."""
  return models.create_model(config.model, config.compute_dtype, config.tta_level, **model_kwargs)


@dataclasses.dataclass(frozen=True)
class Program:
  """A model with its optimizer and step functions for one run's settings and mesh.

  `sample` is one preprocessed input batch: it fixes shapes only. The step functions are built on
  first use and shared by every caller of the same Program."""
  config: Config
  model: object
  sample: np.ndarray
  steps_per_epoch: int
  mesh: jax.sharding.Mesh

  @functools.cached_property
  def head(self) -> str:
    """The classifier head's parameter path (`models.head_scope`)."""
    return models.head_scope(self.model, self.sample)

  @functools.cached_property
  def optimizer(self):
    frozen = tuple(getattr(self.model, 'frozen', ()))
    if self.config.freeze == 'backbone':  # every parameter outside the head
      shapes = jax.eval_shape(lambda x: self.model.init(jax.random.key(0), x, train=False), self.sample)
      paths = ['/'.join(str(getattr(k, 'key', k)) for k in path)
               for path, _ in jax.tree_util.tree_flatten_with_path(shapes['params'])[0]]
      frozen += tuple(p for p in paths if not p.startswith(self.head + '/'))
    return create_optimizer(self.config, self.steps_per_epoch, frozen=frozen,
                            frozen_after_epochs=getattr(self.model, 'frozen_after_epochs', ()),
                            batchnorm_scopes=models.batchnorm_scopes(self.model, self.sample),
                            head=self.head if self.config.head_lr_multiplier != 1.0 else '')

  @functools.cached_property
  def lookahead(self) -> Optional[steps.Lookahead]:
    config = self.config
    if not config.lookahead:
      return None
    return steps.Lookahead(config.lookahead_start_epoch * self.steps_per_epoch, config.lookahead_every_steps,
                           config.lookahead_decay, config.epochs * self.steps_per_epoch, self.steps_per_epoch)

  def init_state(self, init_inputs: Optional[np.ndarray] = None,
                 init_labels: Optional[np.ndarray] = None) -> steps.TrainState:
    """A freshly initialised train state, replicated on the mesh: the template restores fill.

    Models with a data-dependent initialisation (`init_from_data`: airbench's whitening layer, the
    n-gram model's Naive Bayes ratios) get it from `init_inputs` (preprocessed training inputs) and
    `init_labels`; restoring a checkpoint overrides it."""
    state = steps.create_train_state(self.model, self.optimizer, self.sample, jax.random.key(self.config.seed),
                                     self.mesh, self.config.lookahead)
    if init_inputs is None or not hasattr(self.model, 'init_from_data'):
      return state
    params = self.model.init_from_data(jax.device_get(state.params), init_inputs, init_labels)
    replicate = lambda tree: jax.tree.map(lambda x: steps.put_global(np.asarray(x), steps.replicated(self.mesh)), tree)
    state = state.replace(params=replicate(params), opt_state=replicate(self.optimizer.init(params)))
    if state.lookahead is not None:
      state = state.replace(lookahead=replicate({'params': params, 'batch_stats': state.batch_stats}))
    return state

  @functools.cached_property
  def train_step(self):
    """(state, metric sums, global batch, rng) -> (state, metric sums): one step, batches from the host."""
    return steps.make_train_step(self.mesh, self.config.label_smoothing, self.lookahead)

  def train_loop(self, preprocess_on_device):
    """Several steps per call on a split held on the devices (`steps.make_train_loop`)."""
    return steps.make_train_loop(self.mesh, preprocess_on_device, self.config.label_smoothing, self.lookahead)

  @functools.cached_property
  def logits_step(self):
    """(state, global inputs) -> float32 logits: evaluation, one batch from the host per call."""
    return steps.make_logits_step(self.mesh)

  def logits_loop(self, preprocess_on_device):
    """Every eval batch's logits in one call, on a split held on the devices (`steps.make_logits_loop`)."""
    return steps.make_logits_loop(self.mesh, preprocess_on_device)


def build(config: Config, model_kwargs: dict, sample: np.ndarray, steps_per_epoch: int, mesh) -> Program:
  """The Program of `config` for a dataset with `model_kwargs`; `sample`: preprocessed inputs."""
  return Program(config, create_model(config, model_kwargs), np.asarray(sample[:1]), steps_per_epoch, mesh)


@dataclasses.dataclass(frozen=True)
class Trained:
  """A trained workdir opened: its config, its dataset.json and its dataset."""
  config: Config
  description: dict
  dataset: Any


def open_trained(workdir, data_dir: str | None = None, **overrides) -> Trained:
  """Opens a trained workdir from what it recorded, as evaluation and `zoo.load` both do: the
  config (with `overrides`), and the dataset as dataset.json describes it, so that no data needs to
  be reachable to build its model. `data_dir` is only consulted for the class names of a workdir
  that recorded none (trained before dataset.json was written)."""
  workdir = Path(workdir)
  config = dataclasses.replace(workdir_lib.trained_config(workdir), **overrides)
  description = workdir_lib.read_description(workdir) or _description_from_metadata(workdir, config, data_dir)
  info = DatasetInfo.from_json(description['info']) if 'info' in description else None
  dataset = open_dataset(config, data_dir, workdir, info=info)
  if description['inputs']['kind'] == 'text' and workdir_lib.read_vocabulary(workdir) is None:
    raise ZooError(f'{workdir} has no {workdir_lib.VOCABULARY_FILE}: the vocabulary the model was '
                   'trained with is lost; train again in a new workdir')
  return Trained(config, description, dataset)


def _description_from_metadata(workdir: Path, config: Config, data_dir) -> dict:
  """The dataset's description from TFDS's metadata, with numbered class names where it has none."""
  description = open_dataset(config, data_dir, workdir).describe()
  names = description['class_names']
  if all(name == str(i) for i, name in enumerate(names)):
    log.warning('%s has no %s and TFDS gives no class names here: classes are numbered 0..%d; pass '
                'data_dir= (--data_dir) holding the prepared %s to name them', workdir,
                workdir_lib.DESCRIPTION_FILE, len(names) - 1, config.data_name)
  return description
