"""How training and evaluation batches reach the steps: two feeds with one interface and the same results.

`HostFeed` streams this process's rows of every global batch through tf.data and dispatches one
step per batch: it serves any split. `DeviceFeed` puts the whole split on every device once (CIFAR-10
is 150 MB as uint8) and runs up to `steps_per_dispatch` steps per jitted call, each gathering and
augmenting its batch on the device. Both follow `pipeline.epoch_plan`, so a run may switch feeds,
device counts or process counts between resumes and still see the same batches.

Evaluation feeds alike: `HostEval` dispatches the logits step per tf.data batch, `DeviceEval` runs
the logits loop over the split held on the devices; both return every example's logits.

Feeds deliver batches: the steps they run come built from `builder.Program`, and of the config they
read only what says how batches are made and dispatched (batch sizes, seed, pipeline, steps per call).
"""
import jax
import numpy as np

from zoo.data import mixing, pipeline
from zoo.training import steps

# 'auto' holds a training split on the devices up to this size (it is replicated on each device).
DEVICE_SPLIT_LIMIT_BYTES = 2 << 30


def choose(config, dataset, split: pipeline.ArraySplit) -> str:
  if config.input_pipeline != 'auto':
    return config.input_pipeline
  fits = split.inputs.nbytes + split.labels.nbytes <= DEVICE_SPLIT_LIMIT_BYTES
  return 'device' if fits and hasattr(dataset, 'preprocess_on_device') else 'tf_data'


def _process_slice() -> pipeline.ProcessSlice:
  return pipeline.ProcessSlice(jax.process_index(), jax.process_count())


class HostFeed:
  """tf.data on the host, one dispatch per step."""
  max_steps_per_call = 1

  def __init__(self, config, program, dataset, split: pipeline.ArraySplit):
    self.config, self.dataset, self.split, self.mesh = config, dataset, split, program.mesh
    self._step = program.train_step
    # XLA counts a loop's body once, so a step of --accumulate_steps micro-batches would count one of
    # them: its FLOPs are those of the undivided step (lowered only, never compiled), which they add up to.
    self._undivided = lambda: program.undivided_train_step
    self._compiled = None
    self._batches = None
    self.flops_per_step = 0.0

  def start_epoch(self, epoch: int, first_step: int) -> None:
    self._batches = pipeline.train_batches(
        self.split, self.dataset.preprocess, global_batch=self.config.batch_size, seed=self.config.seed,
        epoch=epoch, start_step=first_step, noise_per_example=self.dataset.noise_per_example,
        alternating_columns=self.dataset.alternating_noise_columns, mixup_alpha=self.config.mixup_alpha,
        cutmix_alpha=self.config.cutmix_alpha, process=_process_slice())

  def run(self, state, metrics, rng, num_steps: int):
    for _ in range(num_steps):
      batch = steps.to_global_batch(next(self._batches), self.mesh)
      if self._compiled is None:  # compiled ahead of time once, so that XLA's FLOP count comes free
        lowered = self._step.lower(state, metrics, batch, rng)
        counted = lowered if self.config.accumulate_steps == 1 else self._undivided().lower(state, metrics, batch, rng)
        self._compiled, self.flops_per_step = lowered.compile(), steps.flops_per_step(counted)
      state, metrics = self._compiled(state, metrics, batch, rng)
    return state, metrics


class DeviceFeed:
  """The split held on the devices; `max_steps_per_call` steps per jitted call."""

  def __init__(self, config, program, dataset, split: pipeline.ArraySplit):
    self.config, self.dataset, self.mesh = config, dataset, program.mesh
    self.num_examples = split.num_examples
    self.max_steps_per_call = config.steps_per_dispatch
    replicated = steps.replicated(self.mesh)
    self._inputs = steps.put_global(split.inputs, replicated)
    self._labels = steps.put_global(split.labels, replicated)
    self._loop = program.train_loop(dataset.preprocess_on_device)
    self._undivided = lambda: program.train_loop(dataset.preprocess_on_device, undivided=True)  # as HostFeed's
    self._compiled = None
    self._plan = None
    self._mixing = None
    self._next = 0
    self.flops_per_step = 0.0

  def start_epoch(self, epoch: int, first_step: int) -> None:
    order, noise = pipeline.epoch_plan(self.num_examples, self.config.batch_size, self.config.seed, epoch,
                                       self.dataset.noise_per_example, self.dataset.alternating_noise_columns)
    sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(None, steps.AXIS))
    shard = lambda tree: jax.tree.map(lambda x: steps.put_global(x, sharding), tree)
    mixing_plan = None
    if self.config.mixup_alpha or self.config.cutmix_alpha:
      mixing_plan = mixing.plan(order, noise, self.config.seed, epoch, self.config.mixup_alpha, self.config.cutmix_alpha)
    self._plan = (shard(order), shard(noise))
    self._mixing = shard(mixing_plan)
    self._next = first_step

  def run(self, state, metrics, rng, num_steps: int):
    args = (state, metrics, self._inputs, self._labels, *self._plan, np.int32(self._next),
            np.int32(num_steps), rng, self._mixing)
    if self._compiled is None:
      lowered = self._loop.lower(*args)
      # XLA counts a loop's body once: the loop's count is one step's (plus the batch gather).
      counted = lowered if self.config.accumulate_steps == 1 else self._undivided().lower(*args)
      self._compiled, self.flops_per_step = lowered.compile(), steps.flops_per_step(counted)
    self._next += num_steps
    return self._compiled(*args)


def create(config, program, dataset, split: pipeline.ArraySplit):
  """The feed `--input_pipeline` asks for (`auto`: `choose`), running `program`'s train step."""
  feed = DeviceFeed if choose(config, dataset, split) == 'device' else HostFeed
  return feed(config, program, dataset, split)


def _host_logits(padded_logits: jax.Array, num_examples: int) -> np.ndarray:
  """Global logits [..., outputs] in eval-plan order -> every process's host copy [N, outputs]."""
  from jax.experimental import multihost_utils
  gathered = multihost_utils.process_allgather(padded_logits, tiled=True)
  return np.asarray(gathered).reshape(-1, gathered.shape[-1])[:num_examples]


class HostEval:
  """Evaluation batches through tf.data, one dispatch per batch."""

  def __init__(self, config, program, dataset, split: pipeline.ArraySplit):
    self.config, self.dataset, self.split, self.mesh = config, dataset, split, program.mesh
    self._step = program.logits_step

  def logits(self, state) -> np.ndarray:
    """Every example's logits, float32 [N, outputs], in the split's order, on every process."""
    batches = pipeline.eval_batches(self.split, self.dataset.preprocess, global_batch=self.config.eval_batch_size,
                                    process=_process_slice())
    logits = [self._step(state, steps.to_global_batch(batch['inputs'], self.mesh)) for batch in batches]
    return np.concatenate([_host_logits(b, len(b)) for b in logits])[:self.split.num_examples]


class DeviceEval:
  """The evaluation split held on the devices, every batch's logits in one call."""

  def __init__(self, config, program, dataset, split: pipeline.ArraySplit):
    mesh = program.mesh
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, steps.AXIS))
    indices, _ = pipeline.eval_plan(split.num_examples, config.eval_batch_size)
    self._inputs = steps.put_global(split.inputs, steps.replicated(mesh))
    self._indices = steps.put_global(indices, sharding)
    self.num_examples = split.num_examples
    self._loop = program.logits_loop(dataset.preprocess_on_device)  # compiled on first use

  def logits(self, state) -> np.ndarray:
    """Every example's logits, float32 [N, outputs], in the split's order, on every process (the
    padding rows of the last batch dropped)."""
    return _host_logits(self._loop(state, self._inputs, self._indices), self.num_examples)


def create_eval(config, program, dataset, split: pipeline.ArraySplit):
  """The eval feed `--input_pipeline` asks for (`auto`: `choose`): `evaluator.logits(state)` gives
  every example of `split` exactly once; the feeds differ only in where the batches come from, and
  each epoch's loss and accuracy and `--mode=eval`'s are computed from these logits alike."""
  evaluator = DeviceEval if choose(config, dataset, split) == 'device' else HostEval
  return evaluator(config, program, dataset, split)
