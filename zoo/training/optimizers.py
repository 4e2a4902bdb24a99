"""Optimizers and learning-rate schedules, all from optax, chosen by name from the config."""
import jax
import optax

from zoo.errors import ZooError
from zoo.config import Config

OPTIMIZERS = ('adam', 'adamw', 'sgd')
SCHEDULES = ('constant', 'cosine', 'warmup_cosine', 'onecycle', 'triangular')


def create_schedule(config: Config, steps_per_epoch: int) -> optax.Schedule:
  warmup = max(int(config.warmup_epochs * steps_per_epoch), 1)
  total = max(config.epochs * steps_per_epoch, warmup + 1)  # optax needs some decay after warm-up
  lr = config.learning_rate
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


def _decay_mask(config: Config):
  """--weight_decay_scope=kernels leaves biases and BatchNorm scales/offsets (rank <= 1) alone."""
  if config.weight_decay_scope == 'all':
    return None
  return lambda params: jax.tree.map(lambda p: p.ndim > 1, params)


def _path_name(path) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def _path_mask(params, paths):
  """True for the parameters at 'module/name' paths (the end of the full path, e.g. 'whiten/bias')."""
  return jax.tree_util.tree_map_with_path(lambda path, _: _path_name(path) in paths, params)


def _offsets_of(batchnorm_scopes):
  """A mask: True for the `bias` of every BatchNorm module at `batchnorm_scopes` ('a/b' paths)."""
  def mask(params):
    def is_offset(path, _):
      names = _path_name(path).split('/')
      return names[-1] == 'bias' and '/'.join(names[:-1]) in batchnorm_scopes
    return jax.tree_util.tree_map_with_path(is_offset, params)
  return mask


def _stop_after(num_updates: int) -> optax.GradientTransformation:
  """Passes the first `num_updates` updates, then zeros: the parameter stops where it is."""
  return optax.scale_by_schedule(lambda count: (count < num_updates).astype('float32'))


def create_optimizer(config: Config, steps_per_epoch: int, frozen=(), frozen_after_epochs=(),
                     batchnorm_scopes=frozenset()) -> optax.GradientTransformation:
  """The config's optimizer. Parameters at the `frozen` paths ('module/name') never change; those
  in `frozen_after_epochs` ((path, epochs) pairs) stop after that many epochs (momentum and decay
  included, as torch skips a parameter without gradient). `batchnorm_scopes` are the paths of the
  model's BatchNorm modules (`zoo.models.batchnorm_scopes`), whose offsets get `bias_lr_multiplier`."""
  opt = _base_optimizer(config, steps_per_epoch)
  if config.bias_lr_multiplier != 1.0:
    # airbench94's BatchNorm offsets: `bias_lr_multiplier` x the learning rate, the same decay per
    # step as the other weights (torch lr=64 lr, weight_decay=wd/64), i.e. the gradient scaled
    # before decay is added.
    opt = optax.chain(optax.masked(optax.scale(config.bias_lr_multiplier),
                                   _offsets_of(frozenset(batchnorm_scopes))), opt)
  if frozen:
    opt = optax.chain(opt, optax.masked(optax.set_to_zero(), lambda params: _path_mask(params, frozen)))
  for path, epochs in frozen_after_epochs:
    stop = _stop_after(int(epochs * steps_per_epoch))
    opt = optax.chain(opt, optax.masked(stop, lambda params, path=path: _path_mask(params, (path,))))
  return opt


def _base_optimizer(config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
  schedule = create_schedule(config, steps_per_epoch)
  if config.optimizer == 'adamw':
    return optax.adamw(schedule, weight_decay=config.weight_decay, mask=_decay_mask(config))
  if config.optimizer == 'adam':
    # Keras' Adam uses epsilon 1e-7; matching it keeps the seed recipe the seed's.
    opt = optax.adam(schedule, eps=1e-7)
  elif config.optimizer == 'sgd':
    opt = optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov)
  else:
    raise ZooError(f'unknown --optimizer={config.optimizer!r}; choose one of: {", ".join(OPTIMIZERS)}')
  if config.weight_decay:  # Coupled L2 for adam and sgd, as in their classic recipes.
    opt = optax.chain(optax.add_decayed_weights(config.weight_decay, mask=_decay_mask(config)), opt)
  return opt
