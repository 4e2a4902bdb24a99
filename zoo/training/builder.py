"""The one place where a Config becomes what runs: the model, its optimizer, its train state and
its jitted step functions.

Training (`loop.py` through the feeds), evaluation, the benchmark and `zoo.load` all build here, so
the step the benchmark times is the step training runs (airbench's lookahead and frozen whitening
included), and a model is created the same way wherever it is restored.
"""
import dataclasses
import functools
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np

from zoo import models, rules
from zoo import workdir as workdir_lib
from zoo.config import Config
from zoo.data import open_dataset
from zoo.models import contract
from zoo.data.sources import DatasetInfo
from zoo.errors import ZooError
from zoo.training import steps
from zoo.training.optimizers import create_optimizer, treatments_for


def create_model(config: Config, model_kwargs: dict):
  """The config's registered model with its settings and the dataset's dimensions
  (`dataset.model_kwargs()`)."""
  return models.create_model(config.model, config.model_settings, **model_kwargs)


def with_all_settings(config: Config) -> Config:
  """`config` with every setting of its model, defaults included: what config.json records, so
  that a later change of a default cannot change what a trained workdir means."""
  settings = models.resolve_settings(config.model, config.model_settings)
  return dataclasses.replace(config, model_settings=contract.json_settings(settings))


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
  def treatments(self) -> dict:
    """Each parameter's treatment by the optimizer: the zoo's default rules, the model's, then
    --freeze's and the run's --rule (`zoo.rules`)."""
    own = models.contract_of(self.model).rules
    freeze = rules.FREEZE_BACKBONE if self.config.freeze == 'backbone' else ()
    every = (*own, *freeze, *self.config.rules)
    used = set().union(*(rule.placeholders for rule in rules.parse_all(every)))
    scopes = {}
    if 'head' in used:
      scopes['head'] = [self.head]
    if 'batchnorm' in used:
      scopes['batchnorm'] = sorted(models.batchnorm_scopes(self.model, self.sample))
    shapes = jax.eval_shape(lambda x: self.model.init(jax.random.key(0), x, train=False), self.sample)
    return treatments_for(shapes['params'], every, scopes, checked=self.config.rules)

  @functools.cached_property
  def optimizer(self):
    return create_optimizer(self.config, self.steps_per_epoch, self.treatments)

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
                                     self.mesh, self.config.lookahead, ema=self.config.ema_decay > 0)
    if init_inputs is None or models.contract_of(self.model).init_from_data is None:
      return state
    params = self.model.init_from_data(jax.device_get(state.params), init_inputs, init_labels)
    replicate = lambda tree: jax.tree.map(lambda x: steps.put_global(np.asarray(x), steps.replicated(self.mesh)), tree)
    state = state.replace(params=replicate(params), opt_state=replicate(self.optimizer.init(params)))
    return steps.averages_restarted(state)

  @functools.cached_property
  def step_settings(self) -> steps.StepSettings:
    return steps.StepSettings(self.config.label_smoothing, self.lookahead, self.config.ema_decay,
                              self.config.accumulate_steps)

  @functools.cached_property
  def train_step(self):
    """(state, metric sums, global batch, rng) -> (state, metric sums): one step, batches from the host."""
    return steps.make_train_step(self.mesh, self.step_settings)

  def train_loop(self, preprocess_on_device, undivided: bool = False):
    """Several steps per call on a split held on the devices (`steps.make_train_loop`); `undivided`:
    without --accumulate_steps' micro-batches (what XLA's FLOP count is taken from, `feeds`)."""
    settings = dataclasses.replace(self.step_settings, accumulate_steps=1) if undivided else self.step_settings
    return steps.make_train_loop(self.mesh, preprocess_on_device, settings)

  @functools.cached_property
  def undivided_train_step(self):
    """`train_step` without --accumulate_steps' micro-batches, for XLA's FLOP count (`feeds`)."""
    return steps.make_train_step(self.mesh, dataclasses.replace(self.step_settings, accumulate_steps=1))

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
class OpenedWorkdir:
  """A trained workdir opened: its config, its dataset.json and its dataset (not yet its model, which
  `zoo.load` restores into an `inference.TrainedModel`)."""
  config: Config
  description: dict
  dataset: Any


def open_workdir(workdir, data_dir: str | None = None, **overrides) -> OpenedWorkdir:
  """Opens a trained workdir from what it recorded, as evaluation and `zoo.load` both do: the
  config (with `overrides`), and the dataset as dataset.json describes it, so that no data needs to
  be reachable to build its model. `data_dir` is where the dataset reads its splits (evaluation);
  loading a model reads none."""
  workdir = Path(workdir)
  config = dataclasses.replace(workdir_lib.trained_config(workdir), **overrides)
  description = workdir_lib.read_description(workdir)
  if description is None:
    raise ZooError(f'{workdir} has no {workdir_lib.DESCRIPTION_FILE}: the class names and input format of its '
                   'model are not recorded; rerun its training command (which writes it), or train again in a '
                   'new workdir')
  info = DatasetInfo.from_json(description['info']) if 'info' in description else None
  dataset = open_dataset(config, data_dir, workdir, info=info)
  if description['inputs']['kind'] == 'text' and workdir_lib.read_vocabulary(workdir) is None:
    raise ZooError(f'{workdir} has no {workdir_lib.VOCABULARY_FILE}: the vocabulary the model was '
                   'trained with is lost; train again in a new workdir')
  return OpenedWorkdir(config, description, dataset)
