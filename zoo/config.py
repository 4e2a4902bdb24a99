"""The run's hyperparameters: one `Config`, every field described once, here.

Each field carries its default, its help text and its role:
- `run`: a recorded setting of the trained model; a resumed run must ask for the same value, and
  `--mode=eval`/`predict` read it from the workdir (a contradicting flag is a mistake);
- `eval`: what an evaluation does (split, batch, test-time augmentation); recorded for training, but
  `--mode=eval` may choose another value;
- `runtime`: how fast a run goes or what it logs and keeps, never what it computes; free to change
  on resume and accepted by every mode.
The command-line flags, `--help`, the eval-mode rules and the resume check are all derived from these
fields (`experiments/launch.py`, `zoo/workdir.py`), so adding a field is one edit here plus its use.
`config.json` in the workdir records every field (`zoo.workdir`).
"""
import dataclasses
import json
import typing
from pathlib import Path
from typing import Optional

from zoo import cache_dirs
from zoo.errors import ZooError

ROLES = ('run', 'eval', 'runtime')
OPTIMIZERS = ('adam', 'adamw', 'sgd', 'muon')  # zoo.training.optimizers builds them
SCHEDULES = ('constant', 'cosine', 'warmup_cosine', 'onecycle', 'triangular', 'linear')
INPUT_PIPELINES = ('auto', 'device', 'tf_data')


def _field(default, help: str, role: str = 'run', choices: tuple = (),  # pylint: disable=redefined-builtin
           at_least: int | None = None, at_most: int | None = None):
  """`at_least`/`at_most`: the range `validate` checks (a value outside it would crash the run later)."""
  assert role in ROLES, role
  metadata = {'help': help, 'role': role, 'choices': choices, 'range': (at_least, at_most)}
  if isinstance(default, dict):  # mutable: each Config gets its own copy
    return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


def _check_range(field: dataclasses.Field, value) -> None:
  low, high = field.metadata['range']
  if (low is None or value >= low) and (high is None or value <= high):
    return
  allowed = f'--{field.name}={low} or more' if high is None else f'--{field.name}={low} to {high}'
  raise ZooError(f'--{field.name}={value} is out of range; pass {allowed}')


def _has_type(value, kind) -> bool:
  """Whether a JSON value fits a field of type `kind` (an int fits a float; a bool is no number)."""
  if typing.get_origin(kind) is typing.Union:
    return any(_has_type(value, option) for option in typing.get_args(kind))
  if kind is type(None):
    return value is None
  if isinstance(value, bool) and kind is not bool:
    return False
  if kind is tuple:  # a list of strings in config.json
    return isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value)
  return isinstance(value, (int, float) if kind is float else kind)


def _type_name(kind) -> str:
  return kind.__name__ if isinstance(kind, type) else str(kind).replace('typing.', '')


@dataclasses.dataclass(frozen=True)
class Config:
  dataset: str = _field('cifar10', 'TFDS classification dataset name (e.g. mnist, fashion_mnist, cifar10, '
                        'cifar100, svhn_cropped; imdb_reviews, ag_news_subset, yelp_polarity_reviews); shape and '
                        'classes from its metadata.')
  image_folder: str = _field('', 'Train on your own images: DIR/<split>/<class name>/<image file>, any format '
                             'Pillow reads (replaces --dataset; splits are the subfolders, slicing such as '
                             '"train[:90%]" works).')
  text_folder: str = _field('', 'Train on your own texts: DIR/<split>/<class name>/<file>.txt, UTF-8 '
                            '(replaces --dataset).')
  image_size: int = _field(0, 'Resize images to N x N (0: the dataset\'s own size; folders: 32).')
  model: str = _field('simple_cnn', 'Model name from zoo.models.MODELS; its settings are the --model.NAME flags '
                      '(each names the models that have it).')
  model_settings: dict = _field({}, 'The model\'s settings (--model.NAME=VALUE); config.json records every one, '
                                'defaults included, and a resume must repeat them.')
  epochs: int = _field(10, 'Number of passes over --train_split.', at_least=1)
  batch_size: int = _field(32, 'Global batch size, split evenly over every device of every process; must '
                           'divide by the number of devices.')
  accumulate_steps: int = _field(1, 'Split every --batch_size batch into N micro-batches, computed one after the '
                                 'other and their gradients averaged for one optimizer step: the memory of a batch '
                                 'of --batch_size / N, the step of --batch_size (BatchNorm normalises each '
                                 'micro-batch by itself). --batch_size must divide by N x the device count.',
                                 at_least=1)
  eval_batch_size: int = _field(500, 'Global eval batch size; the last batch is padded and masked.', 'eval')
  optimizer: str = _field('adam', 'adam | adamw | sgd (momentum --momentum, --nesterov) | muon (airbench94_muon: '
                          'Muon for the parameters a rule gives it, by default the convolution filters, at '
                          '--muon_learning_rate with --muon_momentum; SGD as sgd for every other parameter).', choices=OPTIMIZERS)
  learning_rate: float = _field(1e-3, 'Peak learning rate.')
  schedule: str = _field('constant', 'constant | cosine | warmup_cosine | onecycle | triangular | linear (optax '
                         'schedules; triangular is airbench94\'s: 0.2 lr -> lr at --warmup_epochs -> 0.07 lr '
                         'at the end; linear is airbench94_muon\'s: lr -> 0 at the end, after a linear warm-up '
                         'from 0 if --warmup_epochs).', choices=SCHEDULES)
  warmup_epochs: float = _field(0.0, 'Linear warm-up length for --schedule=warmup_cosine, triangular and linear.')
  momentum: float = _field(0.9, 'SGD momentum.')
  nesterov: bool = _field(False, 'Nesterov momentum for SGD and Muon.')
  weight_decay: float = _field(0.0, 'Weight decay (decoupled for adamw, L2 for adam, sgd and muon\'s SGD '
                               'parameters; Muon\'s filters are renormalised every step instead). Biases and '
                               'BatchNorm scales and offsets are not decayed unless a --rule says so.')
  rules: tuple = _field((), 'A per-parameter optimizer rule, PATTERN:KEY=VALUE,... (repeat the flag): learning-rate '
                        'and decay multipliers, frozen, a stop or its own schedule length, Muon or not, for the '
                        'parameters whose path matches PATTERN ({head}, {batchnorm}: those scopes). Applied after '
                        'the model\'s own; zoo/rules.py and docs/training.md.')
  muon_learning_rate: float = _field(0.24, '--optimizer=muon: peak learning rate of the Muon filters, on '
                                     '--schedule; their update has a fixed size whatever the gradient\'s scale.')
  muon_momentum: float = _field(0.6, '--optimizer=muon: momentum of the Muon filters (torch form: buffer = '
                                'momentum x buffer + gradient).')
  label_smoothing: float = _field(0.0, 'Label smoothing for the cross-entropy loss.')
  augment: bool = _field(False, 'Random crop (--crop_padding px reflect padding) and horizontal flip of '
                         'training images.')
  mixup_alpha: float = _field(0.0, 'Mixup (images): blend every training image with a partner from the same batch '
                              'and their targets alike, lam x image + (1 - lam) x partner with lam ~ Beta(A, A), '
                              'one lam per batch (timm\'s Mixup; 0: off; 0.2 to 1 are usual).')
  cutmix_alpha: float = _field(0.0, 'CutMix (images): paste a box of a partner from the same batch into every '
                               'training image, the box\'s share of the image 1 - lam with lam ~ Beta(A, A), and mix '
                               'the targets by the areas (0: off; 1.0 is usual). With --mixup_alpha too, each batch '
                               'is one or the other at even odds.')
  crop_padding: int = _field(4, 'Reflect padding of the random crop, in pixels (4: He et al.; 2: airbench).',
                             at_least=0, at_most=16)
  alternating_flip: bool = _field(False, 'With --augment: mirror each image at random in even epochs and the '
                                  'other way in odd ones (airbench), instead of a fresh coin every epoch.')
  lookahead: bool = _field(False, 'Average the weights and BatchNorm statistics as airbench94 does: from '
                           '--lookahead_start_epoch on, every --lookahead_every_steps steps the weights move '
                           'to an average that follows them; the averaged weights end every epoch.')
  lookahead_start_epoch: int = _field(3, 'First epoch of --lookahead.', at_least=0)
  lookahead_every_steps: int = _field(5, 'Steps between --lookahead averaging steps.', at_least=1)
  lookahead_decay: float = _field(0.95, 'Per-step decay of the --lookahead average at the end of training '
                                  '(it rises as (step / total steps)**3).')
  ema_decay: float = _field(0.0, 'Keep an exponential moving average of the weights and BatchNorm statistics '
                            '(after every optimizer step: average = D x average + (1 - D) x weights, from the '
                            'initial weights; it spans about 1 / (1 - D) steps). 0: none. Evaluation, the report, '
                            'zoo.load, export and serving then use the average; it is checkpointed with the run.')
  init_from: str = _field('', 'Fine-tune: start from the latest checkpoint of this trained workdir (its parameters '
                          'and BatchNorm statistics; a fresh optimizer). A classifier head of another width '
                          '(other classes) is created anew. Texts are read with its vocabulary (same --vocab_size '
                          'and --max_length). The start is saved as checkpoint 0: a resume never reads the source '
                          'again, wherever it has gone.')
  freeze: str = _field('none', 'none | backbone: train the classifier head only; every other parameter keeps '
                       'its value (BatchNorm statistics still follow the new data). The rules '
                       '\'.*:frozen\' and \'{head}/.*:frozen=false\' before --rule\'s.', choices=('none', 'backbone'))
  seed: int = _field(0, 'Seeds parameters, data order, augmentation and dropout.', at_least=0, at_most=2**63 - 1)
  train_split: str = _field('train', 'TFDS split to train on (slicing works: "train[:45000]").')
  eval_split: str = _field('test', 'TFDS split to evaluate on after every epoch and in --mode=eval.', 'eval')
  checkpoint_every_steps: int = _field(0, 'Also checkpoint every this many steps (0: once per epoch).', 'runtime',
                                       at_least=0)
  keep_checkpoints: int = _field(3, 'How many recent checkpoints to keep, 1 or more: the newest is never deleted. '
                                 'A resumed run with a smaller value deletes its oldest checkpoints beyond it at '
                                 'its next save.', 'runtime', at_least=1)
  log_every_steps: int = _field(200, 'Progress line every this many steps.', 'runtime', at_least=1)
  eval_every_epochs: int = _field(1, 'Evaluate --eval_split every this many epochs (and after the last).',
                                  'runtime', at_least=1)
  vocab_size: Optional[int] = _field(None, 'Text only: vocabulary size, OOV and padding ids included.')
  max_length: Optional[int] = _field(None, 'Text only: tokens per example after post-padding/truncation.')
  input_pipeline: str = _field('auto', 'auto | device (split held on the devices, batches gathered and '
                               'augmented in the jitted step) | tf_data (batches streamed from the host); same '
                               'results.', 'runtime', INPUT_PIPELINES)
  steps_per_dispatch: int = _field(50, 'With --input_pipeline=device: train steps per jitted call.', 'runtime',
                                   at_least=1)
  split_cache: str = _field(cache_dirs.default_dir('splits'), 'Directory for decoded TFDS splits (.npz; used with an '
                            'explicit --data_dir): later runs skip decoding the images; \'\' turns it off.',
                            'runtime')
  tensorboard: bool = _field(True, 'Write TensorBoard scalars under <workdir>/tensorboard (history.json is '
                             'always written).', 'runtime')

  @classmethod
  def fields_with_role(cls, *roles: str) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata['role'] in roles)

  @property
  def weights(self) -> str:
    """Which weights stand for the trained model in evaluation, the report, zoo.load, export and
    serving, as their logs and JSON say: 'ema' (the moving average of --ema_decay) or 'trained'."""
    return 'ema' if self.ema_decay else 'trained'

  @property
  def data_name(self) -> str:
    """The TFDS dataset's name, or the folder's."""
    folder = self.image_folder or self.text_folder
    return Path(folder).expanduser().resolve().name if folder else self.dataset

  def validate(self, device_count: int) -> None:
    """Raises ZooError naming the first field a run cannot use, and how to fix it. Every name is
    checked here, before any data is read."""
    from zoo import models, rules  # the registry is the one list of model names and settings
    models.resolve_settings(self.model, self.model_settings)
    rules.parse_all(self.rules)
    for field in dataclasses.fields(self):
      choices, value = field.metadata['choices'], getattr(self, field.name)
      if choices and value not in choices:
        raise ZooError(f'unknown --{field.name}={value!r}; choose one of: {", ".join(choices)}')
      _check_range(field, value)
    if self.image_folder and self.text_folder:
      raise ZooError('--image_folder and --text_folder were both given; pass the one your files are')
    if not (self.dataset or self.image_folder or self.text_folder):
      raise ZooError('no data given; pass --dataset=NAME (TFDS) or --image_folder=DIR / --text_folder=DIR')
    if self.image_size < 0 or 0 < self.image_size < 8:
      raise ZooError(f'--image_size={self.image_size} is too small; pass 8 or more, or 0 for the dataset\'s size')
    for name in ('batch_size', 'eval_batch_size'):
      value = getattr(self, name)
      if value <= 0 or value % device_count:
        raise ZooError(f'--{name}={value} is not a positive multiple of the device count ({device_count}), '
                       f'and the global batch is split evenly over the devices; pass e.g. '
                       f'--{name}={max(value // device_count, 1) * device_count}')
    if self.batch_size % (device_count * self.accumulate_steps):
      multiple = device_count * self.accumulate_steps
      raise ZooError(f'--batch_size={self.batch_size} does not split into --accumulate_steps={self.accumulate_steps} '
                     f'equal micro-batches on each of {device_count} device(s); pass a --batch_size that divides '
                     f'by {multiple}, e.g. --batch_size={max(self.batch_size // multiple, 1) * multiple}')
    if self.learning_rate <= 0:
      raise ZooError(f'--learning_rate={self.learning_rate} is not positive; pass a rate such as --learning_rate=0.001')
    if self.optimizer == 'muon' and (self.muon_learning_rate <= 0 or not 0 <= self.muon_momentum < 1):
      raise ZooError(f'--optimizer=muon: --muon_learning_rate={self.muon_learning_rate} or --muon_momentum='
                     f'{self.muon_momentum} is out of range; pass a positive rate and 0 <= momentum < 1')
    for name in ('mixup_alpha', 'cutmix_alpha'):
      if getattr(self, name) < 0:
        raise ZooError(f'--{name}={getattr(self, name)} is negative; pass a positive alpha such as --{name}=1.0, or 0 '
                       'for none')
    if not 0 <= self.ema_decay < 1:
      raise ZooError(f'--ema_decay={self.ema_decay} is out of range; pass 0 <= --ema_decay < 1 (e.g. 0.999; 0: no average)')
    if self.lookahead and not 0 <= self.lookahead_decay <= 1:
      raise ZooError(f'--lookahead_decay={self.lookahead_decay} is out of range; pass 0 <= --lookahead_decay <= 1')

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values: dict) -> 'Config':
    """The Config `values` (config.json) describe; names it does not know are left out: a field that
    releases of the same workdir format (`zoo.workdir.FORMAT_VERSION`) removed or added since, which
    a change that keeps every workdir readable may do without bumping the format. Raises TypeError
    naming a value of the wrong type."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, value in values.items():
      if name in fields and not _has_type(value, fields[name].type):
        raise TypeError(f'{name}={value!r} is not of type {_type_name(fields[name].type)}')
    values = {k: tuple(v) if fields[k].type is tuple else v for k, v in values.items() if k in fields}
    return cls(**values)
