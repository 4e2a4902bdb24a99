"""The run's hyperparameters, recorded in the workdir so that a workdir describes itself.

`config.json` beside the checkpoints holds every field below. Evaluating, predicting or resuming
reads it back, so `--mode=eval --workdir=W` needs no other flag but `--data_dir`.
"""
import dataclasses
import json
from pathlib import Path
from typing import Optional

from zoo import cache_dirs
from zoo.errors import ZooError

CONFIG_FILE = 'config.json'


@dataclasses.dataclass(frozen=True)
class Config:
  dataset: str = 'cifar10'       # a TFDS image or text classification dataset; '' with a folder below
  image_folder: str = ''         # your own images: <image_folder>/<split>/<class name>/<image file>
  text_folder: str = ''          # your own texts: <text_folder>/<split>/<class name>/<file>.txt
  image_size: int = 0            # images resized to image_size x image_size; 0: the dataset's (folders: 32)
  model: str = 'simple_cnn'
  epochs: int = 10
  batch_size: int = 32           # global: split evenly over every device of every process
  eval_batch_size: int = 500     # global; the last eval batch is padded and masked
  optimizer: str = 'adam'        # adam | adamw | sgd
  learning_rate: float = 1e-3
  schedule: str = 'constant'     # constant | cosine | warmup_cosine | onecycle | triangular
  warmup_epochs: float = 0.0
  momentum: float = 0.9          # sgd only
  nesterov: bool = False         # sgd only
  weight_decay: float = 0.0
  weight_decay_scope: str = 'kernels'  # kernels | all (airbench decays biases and BatchNorm offsets too)
  bias_lr_multiplier: float = 1.0  # gradient factor for BatchNorm offsets (airbench: 64), before decay
  label_smoothing: float = 0.0
  augment: bool = False          # random crop (reflect padding) + horizontal flip
  crop_padding: int = 4          # pixels of reflect padding for the random crop: translations up to this
  alternating_flip: bool = False  # augment: each image's random mirror is inverted every other epoch
  # Lookahead (airbench94): from `lookahead_start_epoch` on, every `lookahead_every_steps` steps the
  # weights and BatchNorm statistics move to an average that follows them with a decay rising to
  # `lookahead_decay`**every over training; the averaged weights are also the epoch's final ones.
  lookahead: bool = False
  lookahead_start_epoch: int = 3
  lookahead_every_steps: int = 5
  lookahead_decay: float = 0.95
  # Test-time augmentation at evaluation, for models that have it (airbench): 0 none, 1 mirror,
  # 2 mirror + 1-pixel translations; -1 the model's default (airbench: 2). Also an --mode=eval flag.
  tta_level: int = -1
  compute_dtype: str = 'float32'  # float32 | bfloat16: activations and conv/matmul inputs (parameters stay float32)
  seed: int = 0
  train_split: str = 'train'
  eval_split: str = 'test'
  checkpoint_every_steps: int = 0  # 0: only at the end of every epoch
  keep_checkpoints: int = 3
  log_every_steps: int = 200
  eval_every_epochs: int = 1       # the last epoch is always evaluated
  vocab_size: Optional[int] = None  # text datasets only
  max_length: Optional[int] = None  # text datasets only
  # How batches reach the step (results are the same either way, so these may change on resume):
  # 'device' holds the whole split on every device and gathers+augments each batch inside the
  # jitted step, 'tf_data' streams batches from the host, 'auto' picks 'device' when it fits.
  input_pipeline: str = 'auto'
  steps_per_dispatch: int = 50     # 'device' only: train steps run by one jitted call
  split_cache: str = cache_dirs.default_dir('splits')  # decoded TFDS splits kept as .npz ('' off): zoo/data/sources.py
  tensorboard: bool = True         # TensorBoard scalars (the tensorboard package, no TensorFlow); history.json is always written

  # Fields that only change how fast a run goes, never its results.
  RUNTIME_FIELDS = ('input_pipeline', 'steps_per_dispatch', 'eval_every_epochs', 'split_cache', 'tensorboard')

  @property
  def data_name(self) -> str:
    """The TFDS dataset's name, or the folder's."""
    folder = self.image_folder or self.text_folder
    return Path(folder).expanduser().resolve().name if folder else self.dataset

  def validate(self, device_count: int) -> None:
    """Raises ZooError naming the first field a run cannot use, and how to fix it."""
    if self.image_folder and self.text_folder:
      raise ZooError('--image_folder and --text_folder were both given; pass the one your files are')
    if not (self.dataset or self.image_folder or self.text_folder):
      raise ZooError('no data given; pass --dataset=NAME (TFDS) or --image_folder=DIR / --text_folder=DIR')
    if self.image_size < 0 or 0 < self.image_size < 8:
      raise ZooError(f'--image_size={self.image_size} is too small; pass 8 or more, or 0 for the dataset\'s size')
    if self.epochs <= 0:
      raise ZooError(f'--epochs={self.epochs}: the number of epochs must be positive; pass --epochs=1 or more')
    for name in ('batch_size', 'eval_batch_size'):
      value = getattr(self, name)
      if value <= 0 or value % device_count:
        raise ZooError(f'--{name}={value} is not a positive multiple of the device count ({device_count}), '
                       f'and the global batch is split evenly over the devices; pass e.g. '
                       f'--{name}={max(value // device_count, 1) * device_count}')
    if self.learning_rate <= 0:
      raise ZooError(f'--learning_rate={self.learning_rate} is not positive; pass a rate such as --learning_rate=0.001')
    if self.input_pipeline not in ('auto', 'device', 'tf_data'):
      raise ZooError(f'--input_pipeline={self.input_pipeline!r} is unknown; choose auto, device or tf_data')
    if not 0 <= self.crop_padding <= 16:
      raise ZooError(f'--crop_padding={self.crop_padding} is out of range; pass 0 to 16 pixels')
    if self.weight_decay_scope not in ('kernels', 'all'):
      raise ZooError(f'--weight_decay_scope={self.weight_decay_scope!r} is unknown; choose kernels or all')
    if self.lookahead and (self.lookahead_every_steps < 1 or not 0 <= self.lookahead_decay <= 1):
      raise ZooError('--lookahead: the averaging settings are out of range; pass --lookahead_every_steps >= 1 and 0 <= --lookahead_decay <= 1')
    if self.eval_every_epochs < 1:
      raise ZooError(f'--eval_every_epochs={self.eval_every_epochs} is not positive; pass 1 or more')
    if self.compute_dtype not in ('float32', 'bfloat16'):
      raise ZooError(f'--compute_dtype={self.compute_dtype!r} is unknown; choose float32 or bfloat16')
    if self.tta_level not in (-1, 0, 1, 2):
      raise ZooError(f'--tta_level={self.tta_level} is unknown; choose 0 (none), 1 (mirror), 2 (mirror + translations) '
                     'or -1 (the model\'s default)')
    if self.steps_per_dispatch < 1:
      raise ZooError(f'--steps_per_dispatch={self.steps_per_dispatch} is not positive; pass 1 or more')
    if self.checkpoint_every_steps < 0:
      raise ZooError(f'--checkpoint_every_steps={self.checkpoint_every_steps} is negative; pass 0 (once per epoch) or a step count')

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values: dict) -> 'Config':
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


def read_recorded(workdir: Path) -> Optional[Config]:
  path = Path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  try:
    return Config.from_dict(json.loads(path.read_text()))
  except (json.JSONDecodeError, TypeError) as e:
    raise ZooError(f'{path} is not a readable config ({e}); restore it or use a new --workdir') from e


def record(config: Config, workdir: Path) -> None:
  """Writes config.json unless the workdir has one (which `check_resumable` has compared)."""
  check_resumable(config, workdir)
  if read_recorded(workdir) is None:
    Path(workdir).mkdir(parents=True, exist_ok=True)
    (Path(workdir) / CONFIG_FILE).write_text(config.to_json() + '\n')


def check_resumable(config: Config, workdir: Path) -> None:
  """A workdir that holds a run resumes only with the config it was started with."""
  recorded = read_recorded(workdir)
  if recorded is None:
    return
  differences = [f'{f.name}: {getattr(recorded, f.name)!r} recorded, {getattr(config, f.name)!r} asked'
                 for f in dataclasses.fields(Config)
                 if f.name not in Config.RUNTIME_FIELDS and getattr(recorded, f.name) != getattr(config, f.name)]
  if recorded.model != config.model or recorded.data_name != config.data_name:
    raise ZooError(f'{workdir} holds a {recorded.data_name}/{recorded.model} run, not '
                   f'{config.data_name}/{config.model}; pass a new --workdir for this run')
  if differences:
    raise ZooError(f'{workdir} was started with other settings ({"; ".join(differences)}); '
                   'rerun with the recorded flags to resume, or pass a new --workdir')
