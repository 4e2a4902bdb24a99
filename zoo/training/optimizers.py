"""Optimizers and learning-rate schedules from optax, chosen by name from the config, and
airbench94_muon's Muon step for convolution filters (`scale_by_muon`, `normalize_filters`)."""
from typing import Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from zoo import rules
from zoo.errors import ZooError
from zoo.config import Config, OPTIMIZERS, SCHEDULES

# airbench94_muon's Newton-Schulz quintic: its coefficients, 3 iterations, and the norm's epsilon.
MUON_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
MUON_NS_STEPS = 3
MUON_EPS = 1e-7


def create_schedule(config: Config, steps_per_epoch: int, peak: Optional[float] = None,
                    total_steps: Optional[int] = None) -> optax.Schedule:
  """The config's schedule peaking at `peak` (default --learning_rate) over `total_steps` (default
  the whole run)."""
  warmup = max(int(config.warmup_epochs * steps_per_epoch), 1)
  total = total_steps if total_steps is not None else config.epochs * steps_per_epoch
  total = max(total, warmup + 1)  # optax needs some decay after warm-up
  lr = config.learning_rate if peak is None else peak
  if config.schedule == 'linear':  # airbench94_muon's lr x (1 - step / total), warm-up optional
    if not config.warmup_epochs:
      return optax.linear_schedule(lr, 0.0, total)
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup),
                                 optax.linear_schedule(lr, 0.0, total - warmup)], [warmup])
  if config.schedule == 'constant':
    return optax.constant_schedule(lr)
  if config.schedule == 'cosine':
    return optax.cosine_decay_schedule(lr, decay_steps=total)
  if config.schedule == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps=warmup, decay_steps=total)
  if config.schedule == 'onecycle':
    return optax.cosine_onecycle_schedule(total, lr)
  if config.schedule == 'triangular':  # airbench94's: linear from 0.2 lr up to lr, then to 0.07 lr
    return optax.join_schedules([optax.linear_schedule(0.2 * lr, lr, warmup),
                                 optax.linear_schedule(lr, 0.07 * lr, total - warmup)], [warmup])
  raise ZooError(f'unknown --schedule={config.schedule!r}; choose one of: {", ".join(SCHEDULES)}')


class ScaleByMuonState(NamedTuple):
  momentum: optax.Updates  # torch's momentum buffer: momentum x buffer + gradient


def orthogonalize(matrix: jax.Array, steps: int = MUON_NS_STEPS, eps: float = MUON_EPS) -> jax.Array:
  """airbench94_muon's `zeropower_via_newtonschulz5`: the matrix scaled to Frobenius norm 1, then
  `steps` quintic Newton-Schulz iterations towards U V^T (singular values end near, not at, 1)."""
  a, b, c = MUON_NS_COEFFICIENTS
  wide = matrix.T if matrix.shape[0] > matrix.shape[1] else matrix  # the smaller Gram matrix
  x = wide / (jnp.sqrt(jnp.sum(jnp.square(wide))) + eps)
  for _ in range(steps):
    gram = x @ x.T
    x = a * x + (b * gram + c * gram @ gram) @ x
  return x.T if matrix.shape[0] > matrix.shape[1] else x


def _orthogonalize_filter(update: jax.Array) -> jax.Array:
  """A filter (h, w, in, out) as the matrix (h w in, out); torch's (out, in h w) orders the columns
  otherwise, which permutes the result's columns the same way and changes nothing else."""
  return orthogonalize(update.reshape(-1, update.shape[-1])).reshape(update.shape)


def scale_by_muon(momentum: float, nesterov: bool) -> optax.GradientTransformation:
  """Muon's direction as airbench94_muon computes it: torch SGD's momentum buffer (Nesterov: the
  gradient plus momentum x buffer) orthogonalised by `orthogonalize`, in float32 (airbench:
  bfloat16). optax.contrib.scale_by_muon averages with bias correction instead, which changes the
  Nesterov mix of gradient and momentum over the first steps."""
  def init(params):
    return ScaleByMuonState(jax.tree.map(jnp.zeros_like, params))

  def update(updates, state, params=None):
    del params
    buffer = jax.tree.map(lambda b, g: momentum * b + g, state.momentum, updates)
    direction = jax.tree.map(lambda b, g: g + momentum * b, buffer, updates) if nesterov else buffer
    return jax.tree.map(_orthogonalize_filter, direction), ScaleByMuonState(buffer)
  return optax.GradientTransformation(init, update)


def normalize_filters() -> optax.GradientTransformation:
  """airbench94_muon rescales each filter to Frobenius norm sqrt(out channels) before its step;
  as an update: p (sqrt(out) / |p| - 1) added to the step. Chained last, so nothing scales it."""
  def update(updates, state, params):
    rescale = lambda u, p: u + p * (jnp.sqrt(p.shape[-1]) / jnp.sqrt(jnp.sum(jnp.square(p))) - 1)
    return jax.tree.map(rescale, updates, params), state
  return optax.GradientTransformation(optax.init_empty_state, update)


def create_optimizer(config: Config, steps_per_epoch: int,
                     treatments: Mapping[str, rules.Treatment]) -> optax.GradientTransformation:
  """The config's optimizer, each parameter treated as `treatments` says (its 'a/b/c' path ->
  `zoo.rules.Treatment`: `treatments_for`). Parameters with the same treatment form one group with
  its own optax chain (`optax.multi_transform`): the gradient scaled by `lr`, the decay added, the
  base optimizer's step on the run's schedule (or one over `schedule_epochs`), zeros after a stop."""
  kinds = sorted(set(treatments.values()), key=repr)
  names = {treatment: f'group_{i}' for i, treatment in enumerate(kinds)}

  def labels(params):
    def label(path, _):
      name = _path_name(path)
      if name not in treatments:
        raise ValueError(f'no treatment for parameter {name}: build the treatments from these parameters')
      return names[treatments[name]]
    return jax.tree_util.tree_map_with_path(label, params)
  return optax.multi_transform({names[t]: _group(config, steps_per_epoch, t) for t in kinds}, labels)


def treatments_for(params, rule_texts=(), scopes: Mapping | None = None,
                   checked=()) -> dict[str, rules.Treatment]:
  """Each parameter's Treatment under the zoo's default rules followed by `rule_texts`;
  `scopes` fills the placeholders (`{head}`, `{batchnorm}`); a rule in `checked` must match."""
  paths = [_path_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  return rules.resolve(rules.parse_all((*rules.DEFAULT_RULES, *rule_texts)), paths, scopes or {},
                       rules.parse_all(checked))


def _path_name(path) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def _group(config: Config, steps_per_epoch: int, treatment: rules.Treatment) -> optax.GradientTransformation:
  """One group's chain: frozen -> zeros; else lr scale, decay, base step, stop."""
  if treatment.frozen:
    return optax.set_to_zero()
  run_steps = config.epochs * steps_per_epoch
  own_steps = None if treatment.schedule_epochs is None else int(treatment.schedule_epochs * steps_per_epoch)
  stops = [int(epochs * steps_per_epoch) for epochs in (treatment.stop_after_epochs, treatment.schedule_epochs)
           if epochs is not None]
  muon = config.optimizer == 'muon' and treatment.optimizer == 'muon'
  opt = (_muon(config, steps_per_epoch, own_steps) if muon else
         _base_optimizer(config, steps_per_epoch, config.weight_decay * treatment.decay, own_steps))
  if stops and min(stops) < run_steps:
    stop = min(stops)  # torch skips a parameter without gradient: momentum and decay stop too
    opt = optax.chain(opt, optax.scale_by_schedule(lambda count: (count < stop).astype('float32')))
  if treatment.lr != 1.0:
    # airbench's per-group rates: the gradient scaled before decay is added, so the parameter
    # decays by the same amount per step as the others (torch lr=64 lr, weight_decay=wd/64).
    opt = optax.chain(optax.scale(treatment.lr), opt)
  return opt


def _muon(config: Config, steps_per_epoch: int, total_steps: Optional[int]) -> optax.GradientTransformation:
  """airbench94_muon's filters: Muon's direction on the schedule at --muon_learning_rate, each
  filter renormalised (no weight decay: the renormalisation bounds them)."""
  return optax.chain(scale_by_muon(config.muon_momentum, config.nesterov),
                     optax.scale_by_learning_rate(create_schedule(config, steps_per_epoch, config.muon_learning_rate,
                                                                  total_steps)),
                     normalize_filters())


def _base_optimizer(config: Config, steps_per_epoch: int, weight_decay: float,
                    total_steps: Optional[int] = None) -> optax.GradientTransformation:
  """--optimizer's step (SGD for what Muon does not update) with `weight_decay`."""
  schedule = create_schedule(config, steps_per_epoch, total_steps=total_steps)
  if config.optimizer == 'adamw':
    return optax.adamw(schedule, weight_decay=weight_decay)
  if config.optimizer == 'adam':
    # Keras' Adam uses epsilon 1e-7; matching it keeps the seed recipe the seed's.
    opt = optax.adam(schedule, eps=1e-7)
  elif config.optimizer in ('sgd', 'muon'):
    opt = optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov)
  else:
    raise ZooError(f'unknown --optimizer={config.optimizer!r}; choose one of: {", ".join(OPTIMIZERS)}')
  if weight_decay:  # Coupled L2 for adam and sgd, as in their classic recipes.
    opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
  return opt
