"""Per-parameter optimizer rules as data: which parameters learn, how fast, with how much weight
decay, for how long, and under which optimizer.

A rule is one line, `PATTERN:KEY=VALUE,KEY=VALUE`, in the manner of big_vision's `lr_mults`,
`wd_mults` and `schedule` lists. PATTERN is a regular expression that must match a parameter's
whole path (`ConvGroup_0/BatchNorm_1/bias`); `{head}` stands for the classifier head's scope and
`{batchnorm}` for the scope of any BatchNorm module, both found from what the modules are, not
what they are called. The keys:

  lr=F                 multiplies the gradient before weight decay is added, so the parameter moves
                       F times faster while it decays by the same amount per step (airbench's
                       BatchNorm offsets, 64; airbench94_muon's head, 1/64)
  decay=F              multiplies --weight_decay (0: not decayed)
  frozen[=true|false]  the parameter never changes (its optimizer state is not kept)
  stop_after_epochs=N  it follows the run's schedule and stops after N epochs (airbench94's
                       whitening bias)
  schedule_epochs=N    its schedule runs over N epochs instead of the run's, then it stops (under
                       --schedule=linear it reaches 0 at N: airbench94_muon's whitening bias)
  optimizer=muon|base  with --optimizer=muon, whether Muon updates it (the others get the base SGD)

Rules apply in order: the zoo's `DEFAULT_RULES`, then the model's own (`rules` on its class), then
the run's (`--rule`, repeatable, in recipes); for each key the last matching rule that sets it
wins. A rule of the run that matches no parameter is a mistake worth naming.
"""
import dataclasses
import re
from typing import Iterable, Mapping

from zoo.errors import ZooError

KEYS = {'lr': float, 'decay': float, 'frozen': bool, 'stop_after_epochs': float, 'schedule_epochs': float,
        'optimizer': str}
OPTIMIZER_CHOICES = ('muon', 'base')
PLACEHOLDERS = ('head', 'batchnorm')

# Every run's first rules: biases and normalisation scales and offsets are not decayed (the classic
# convention); with --optimizer=muon, convolution filters are Muon's (airbench94_muon's choice).
DEFAULT_RULES = (r'(.*/)?(bias|scale):decay=0', r'(.*/)?Conv_\d+/kernel:optimizer=muon')
# --freeze=backbone: only the classifier head learns.
FREEZE_BACKBONE = ('.*:frozen', '{head}/.*:frozen=false')


@dataclasses.dataclass(frozen=True)
class Rule:
  text: str                 # the line as written, for messages
  pattern: str              # with placeholders, before `resolve` expands them
  settings: tuple           # ((key, value), ...) in the order written

  @property
  def placeholders(self) -> set[str]:
    return set(re.findall(r'\{(\w+)\}', self.pattern))


def _value(key: str, text: str, rule: str):
  kind = KEYS[key]
  try:
    if kind is bool:
      if text.lower() not in ('', 'true', 'false'):
        raise ValueError
      return text.lower() != 'false'
    if kind is float:
      value = float(text)
      if value < 0 or value != value:
        raise ValueError
      return value
  except ValueError:
    expected = 'true or false' if kind is bool else 'a number, 0 or more'
    raise ZooError(f'--rule={rule!r}: {key}={text!r} is not {expected}; write e.g. {key}='
                   f'{"true" if kind is bool else "2"}') from None
  if text not in OPTIMIZER_CHOICES:
    raise ZooError(f'--rule={rule!r}: optimizer={text!r} is unknown; choose one of: {", ".join(OPTIMIZER_CHOICES)}')
  return text


def parse(text: str) -> Rule:
  """One rule line as a Rule; a malformed line is a ZooError naming what to write."""
  pattern, colon, body = text.rpartition(':')
  if not colon or not pattern or not body:
    raise ZooError(f'--rule={text!r} is not PATTERN:KEY=VALUE; write e.g. --rule=\'.*/bias:lr=2\' '
                   f'(keys: {", ".join(KEYS)})')
  for name in re.findall(r'\{(\w+)\}', pattern):
    if name not in PLACEHOLDERS:
      raise ZooError(f'--rule={text!r}: {{{name}}} is unknown; the placeholders are '
                     f'{", ".join("{" + p + "}" for p in PLACEHOLDERS)}')
  try:
    re.compile(pattern.replace('{head}', 'x').replace('{batchnorm}', 'x'))
  except re.error as error:
    raise ZooError(f'--rule={text!r}: {pattern!r} is not a regular expression ({error}); fix the pattern') from None
  settings = []
  for item in body.split(','):
    key, _, value = item.strip().partition('=')
    if key not in KEYS:
      raise ZooError(f'--rule={text!r}: {key!r} is not a rule key; use one of: {", ".join(KEYS)}')
    if not value and KEYS[key] is not bool:
      raise ZooError(f'--rule={text!r}: {key} needs a value; write {key}=VALUE')
    settings.append((key, _value(key, value, text)))
  return Rule(text, pattern, tuple(settings))


def parse_all(texts: Iterable[str]) -> tuple[Rule, ...]:
  return tuple(parse(text) for text in texts)


def _expand(pattern: str, scopes: Mapping[str, Iterable[str]]) -> str:
  """The pattern with each placeholder replaced by the alternatives of its scopes (none: a
  pattern that matches nothing)."""
  def alternatives(match):
    found = [re.escape(scope) for scope in scopes.get(match.group(1), ())]
    return f'(?:{"|".join(found)})' if found else '(?!)'
  return re.sub(r'\{(\w+)\}', alternatives, pattern)


@dataclasses.dataclass(frozen=True)
class Treatment:
  """What the optimizer does to one parameter, all rules applied."""
  lr: float = 1.0
  decay: float = 1.0
  frozen: bool = False
  stop_after_epochs: float | None = None
  schedule_epochs: float | None = None
  optimizer: str = 'base'


def resolve(rules: Iterable[Rule], paths: Iterable[str], scopes: Mapping[str, Iterable[str]],
            must_match: Iterable[Rule] = ()) -> dict[str, Treatment]:
  """Each path's Treatment under `rules` (in order; the last match setting a key wins). A rule in
  `must_match` that matches no path raises ZooError listing the paths."""
  rules, paths = tuple(rules), tuple(paths)
  compiled = [(rule, re.compile(_expand(rule.pattern, scopes))) for rule in rules]
  for rule, regex in compiled:
    if rule in tuple(must_match) and not any(regex.fullmatch(path) for path in paths):
      shown = ', '.join(paths[:12]) + (', ...' if len(paths) > 12 else '')
      raise ZooError(f'--rule={rule.text!r} matches no parameter; the model\'s parameters are: {shown}')
  treatments = {}
  for path in paths:
    values = {}
    for rule, regex in compiled:
      if regex.fullmatch(path):
        values.update(rule.settings)
    treatments[path] = Treatment(**values)
  return treatments
