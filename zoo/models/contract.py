"""What a registered model is, said once and checked when it is registered.

A model is a Linen module class. Its dataclass fields are of three kinds:
- given by the dataset (`DATASET_FIELDS`: `num_classes`, and `vocab_size` for text);
- given by the training step (`axis_name`: the mapped axis a batch is sharded over);
- **settings**: everything else, each declared with `setting(default, help)`; they become
  `--model.NAME` flags and config.json's `model_settings`, and a resume must repeat them.
And of class attributes, with these defaults when absent (`OPTIONAL`):
- `input_kind`: 'image' or 'text' (required);
- `min_image_size`: the smallest side it can take (1);
- `rules`: its per-parameter optimizer rules (`zoo.rules`), applied before the run's (());
- `init_from_data(params, inputs, labels) -> params`, a data-dependent initialisation, with
  `init_examples`: how many training examples it sees (None: all) (absent: none).
`register` refuses a class that breaks this with an error that names the broken part, so a new
model fails when it is added, not in the middle of a run.
"""
import dataclasses
import inspect
from typing import Any, Callable, Optional

import flax.linen as nn

from zoo import rules as rules_lib
from zoo.errors import ZooError

DATASET_FIELDS = ('num_classes', 'vocab_size')
STEP_FIELDS = ('axis_name',)
INPUT_KINDS = ('image', 'text')
ROLES = ('run', 'eval')  # eval: --mode=eval may choose another value (test-time augmentation)
SETTING_TYPES = {int: 'an integer', float: 'a number', bool: 'true or false', str: 'a string',
                 tuple[int, ...]: 'integers separated by commas'}
OPTIONAL = {'min_image_size': 1, 'rules': (), 'init_from_data': None, 'init_examples': None}


def setting(default, help: str, role: str = 'run'):  # pylint: disable=redefined-builtin
  """A model setting: its default and a help line (the flag's), `role` 'eval' if an evaluation
  may change it."""
  return dataclasses.field(default=default, metadata={'help': help, 'role': role})


@dataclasses.dataclass(frozen=True)
class Setting:
  name: str
  type: Any
  default: Any
  help: str
  role: str

  def describe(self) -> str:
    return SETTING_TYPES[self.type]


@dataclasses.dataclass(frozen=True)
class Contract:
  """A model class as the rest of the zoo sees it."""
  input_kind: str
  min_image_size: int
  rules: tuple[str, ...]
  init_from_data: Optional[Callable]
  init_examples: Optional[int]
  settings: dict  # name -> Setting


def _fields(cls) -> list[dataclasses.Field]:
  return [f for f in dataclasses.fields(cls) if f.name not in ('parent', 'name')]


def settings_of(cls) -> dict[str, Setting]:
  return {f.name: Setting(f.name, f.type, f.default, f.metadata.get('help', ''), f.metadata.get('role', 'run'))
          for f in _fields(cls) if f.name not in DATASET_FIELDS + STEP_FIELDS}


def contract_of(cls) -> Contract:
  """The contract of a model class or instance (assumed registered, hence checked)."""
  cls = cls if isinstance(cls, type) else type(cls)
  values = {name: getattr(cls, name, default) for name, default in OPTIONAL.items()}
  return Contract(input_kind=cls.input_kind, settings=settings_of(cls), **values)


def fits(value, kind) -> bool:
  """Whether a setting's value (Python or JSON) is of its type (an int fits a float; no bools as numbers)."""
  if kind == tuple[int, ...]:
    return isinstance(value, (tuple, list)) and all(fits(v, int) for v in value)
  if isinstance(value, bool) and kind is not bool:
    return False
  return isinstance(value, (int, float) if kind is float else kind)


def check(name: str, cls) -> None:
  """Raises TypeError naming the first part of the contract `cls` breaks."""
  problem = _problem(cls)
  if problem:
    raise TypeError(f'model {name!r} ({getattr(cls, "__name__", cls)}) breaks the model contract '
                    f'(zoo/models/contract.py): {problem}')


def _problem(cls) -> str:
  if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
    return 'it is not a flax.linen.Module class'
  if getattr(cls, 'input_kind', None) not in INPUT_KINDS:
    return f'its class attribute input_kind must be one of {INPUT_KINDS}'
  names = {f.name for f in _fields(cls)}
  if 'num_classes' not in names:
    return 'it has no num_classes field (the output width the dataset gives)'
  if 'train' not in inspect.signature(cls.__call__).parameters:
    return '__call__ takes no train argument (apply(variables, inputs, train=...))'
  for s in settings_of(cls).values():
    if not s.help:
      return f'field {s.name} is not declared with setting(default, help)'
    if s.type not in SETTING_TYPES:
      return (f'setting {s.name} has type {s.type}; settings are one of int, float, bool, str, tuple[int, ...] '
              '(what a flag and config.json hold)')
    if not fits(s.default, s.type):
      return f'setting {s.name}\'s default {s.default!r} is not of its type {s.type}'
    if s.role not in ROLES:
      return f'setting {s.name}\'s role {s.role!r} is not one of {ROLES}'
  size = getattr(cls, 'min_image_size', 1)
  if not isinstance(size, int) or size < 1:
    return f'min_image_size={size!r} is not a positive integer'
  own_rules = getattr(cls, 'rules', ())
  if not isinstance(own_rules, tuple) or not all(isinstance(r, str) for r in own_rules):
    return 'rules must be a tuple of rule strings (zoo/rules.py)'
  try:
    rules_lib.parse_all(own_rules)
  except Exception as error:  # pylint: disable=broad-except
    return f'a rule does not parse: {error}'
  if hasattr(cls, 'init_from_data') != hasattr(cls, 'init_examples'):
    return 'init_from_data and init_examples go together (how many training examples it sees; None: all)'
  examples = getattr(cls, 'init_examples', None)
  if examples is not None and (not isinstance(examples, int) or examples < 1):
    return f'init_examples={examples!r} is neither None nor a positive integer'
  return ''


def check_settings(name: str, cls, given: dict, roles=ROLES) -> dict:
  """`given` settings checked against `cls`'s, with every other setting at its default; a ZooError
  names an unknown setting (and the model's), one of the wrong type, or one of a role not in `roles`."""
  settings = settings_of(cls)
  for key, value in given.items():
    if key not in settings:
      known = ', '.join(f'--model.{k}' for k in settings) or 'none'
      raise ZooError(f'--model.{key} is not a setting of {name}; its settings are: {known}')
    if not fits(value, settings[key].type):
      raise ZooError(f'--model.{key}={value!r} is not {settings[key].describe()}; pass e.g. '
                     f'--model.{key}={_shown(settings[key].default)}')
    if settings[key].role not in roles:
      raise ZooError(f'--model.{key} is fixed by the trained run; drop the flag')
  resolved = {key: s.default for key, s in settings.items()}
  resolved.update({key: tuple(v) if isinstance(v, list) else v for key, v in given.items()})
  return resolved


def _shown(value) -> str:
  if isinstance(value, tuple):
    return ','.join(map(str, value))
  return str(value).lower() if isinstance(value, bool) else str(value)


def json_settings(settings: dict) -> dict:
  """Settings as config.json holds them (tuples as lists)."""
  return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}

