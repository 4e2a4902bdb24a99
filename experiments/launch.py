"""The command line shared by every training experiment: its flags, and train, eval or predict.

An experiment module only names its defaults (`define_flags(Config(...))`) and calls
`app.run(launch.run)`; the flags come from `Config`'s fields (default, help text, role), the
platform's from `accelerators.py`, predict's from `predictions.py`; the training loop lives in `zoo`.
"""
import dataclasses
import json
import logging
import os
import time
import typing
from pathlib import Path

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TensorFlow only reads data here: keep it quiet.

from absl import flags
from absl import logging as absl_logging

from experiments import accelerators, predictions
from zoo.config import Config
from zoo.errors import ZooError, exit_with

FLAGS = flags.FLAGS
RECIPES = Path(__file__).resolve().parent / 'recipes'  # the flagfiles, each with its command and result
# --help of every experiment lists the platform's and predict's flags with its own.
flags.adopt_module_key_flags(accelerators)
flags.adopt_module_key_flags(predictions)


def define_flags(defaults: Config, flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines --mode, --workdir, --data_dir, --checkpoint_step, --eval_output and one flag per Config field, with
  the field's help text and `defaults`' value."""
  flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'predict', 'lr_find'],
                    'train (resumes from the workdir\'s latest checkpoint), eval (a workdir\'s checkpoint '
                    'on --eval_split), predict (--image files or --text strings -> one JSON line each), or '
                    'lr_find (fastai\'s learning-rate range test of this training: writes lr_find.png into '
                    '--workdir, or the current directory without it, and prints the suggested rate; nothing '
                    'else is written).', flag_values=flag_values)
  flags.DEFINE_integer('lr_find_steps', None, '--mode=lr_find: steps of the range test, fewer when the loss '
                       'diverges first (default: fastai\'s, zoo/training/lr_find.py).', flag_values=flag_values)
  flags.DEFINE_float('lr_find_start', None, '--mode=lr_find: the first step\'s learning rate (default: fastai\'s).',
                     flag_values=flag_values)
  flags.DEFINE_float('lr_find_end', None, '--mode=lr_find: the rate the test would reach at its last step '
                     '(default: fastai\'s).', flag_values=flag_values)
  flags.DEFINE_string('workdir', None, 'Run directory: config, checkpoints, history, plots, TensorBoard. '
                      'Default: workdirs/<dataset or folder name>_<model>.', flag_values=flag_values)
  flags.DEFINE_string('data_dir', None, 'TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).',
                      flag_values=flag_values)
  flags.DEFINE_integer('checkpoint_step', None, '--mode=eval/predict: use this step instead of the latest.',
                       flag_values=flag_values)
  flags.DEFINE_string('eval_output', None, '--mode=eval: the folder for eval.json and report/ (default: the '
                      'workdir; for a shipped or packed model, which is only read, ./eval_<dataset>_<model>).',
                      flag_values=flag_values)
  flags.DEFINE_enum('eval_weights', 'auto', ['auto', 'trained'], '--mode=eval of a run with --ema_decay: auto '
                    'evaluates the moving average, as the run\'s own evaluations did; trained the weights it '
                    'averages, to compare the two.', flag_values=flag_values)
  for field in dataclasses.fields(Config):
    if field.name == 'model_settings':  # one flag per setting: _define_model_settings
      continue
    if field.name == 'rules':  # repeated: --rule=A --rule=B
      flags.DEFINE_multi_string('rule', list(defaults.rules), field.metadata['help'], flag_values=flag_values)
      continue
    kind = typing.get_args(field.type)[0] if typing.get_origin(field.type) is typing.Union else field.type
    define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
              str: flags.DEFINE_string}[kind]
    define(field.name, getattr(defaults, field.name), field.metadata['help'], flag_values=flag_values)
  _define_model_settings(defaults, flag_values)


def _model_settings() -> dict:
  """Every setting name of every registered model -> (its type, [(model, Setting), ...])."""
  from zoo import models
  found = {}
  for name in models.MODELS:
    for setting in models.contract_of(name).settings.values():
      kind, owners = found.setdefault(setting.name, (setting.type, []))
      if kind != setting.type:
        raise TypeError(f'setting {setting.name} is {kind} in one model and {setting.type} in {name}: one flag '
                        'cannot take both; rename one')
      owners.append((name, setting))
  return found


def _define_model_settings(defaults: Config, flag_values: flags.FlagValues) -> None:
  """--model.NAME for every setting of every model, unset (None) unless given: a run's model
  fills in its defaults, and config.json records them all."""
  for name, (kind, owners) in sorted(_model_settings().items()):
    help_text = ' '.join(f'[{model}, default {_shown(setting.default)}] {setting.help}' for model, setting in owners)
    define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
              str: flags.DEFINE_string}.get(kind, flags.DEFINE_list)
    define(f'model.{name}', defaults.model_settings.get(name), help_text, flag_values=flag_values)


def _shown(value) -> str:
  return ','.join(map(str, value)) if isinstance(value, tuple) else str(value)


def _given_model_settings(flag_values: flags.FlagValues) -> dict:
  """The --model.NAME flags that hold a value, as the setting's type."""
  given = {}
  for name, (kind, _) in _model_settings().items():
    value = flag_values[f'model.{name}'].value
    if value is None:
      continue
    if kind == tuple[int, ...]:
      try:
        value = tuple(int(v) for v in value)
      except ValueError:
        raise ZooError(f'--model.{name}={",".join(value)} is not integers separated by commas; write e.g. '
                       f'--model.{name}=64,128') from None
    given[name] = value
  return given


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> Config:
  """The flags as a Config; a folder of your own files replaces the TFDS dataset."""
  values = {f.name: flag_values[f.name].value for f in dataclasses.fields(Config)
            if f.name not in ('model_settings', 'rules')}
  values['rules'] = tuple(flag_values['rule'].value or ())
  values['model_settings'] = _given_model_settings(flag_values)
  if values['image_folder'] or values['text_folder']:
    values['dataset'] = ''  # (a recipe's --dataset is overridden: the same recipe on your own files)
  return Config(**values)


def read_recipe(path, defaults: Config = Config()) -> Config:
  """A recipe flagfile (`experiments/recipes/*.flags`) as a Config, parsed as the command line
  parses it but without touching this process's flags."""
  flag_values = flags.FlagValues()
  define_flags(defaults, flag_values)
  flag_values(['recipe', f'--flagfile={path}'])
  return config_from_flags(flag_values)


def _workdir() -> Path:
  return Path(FLAGS.workdir or f'workdirs/{config_from_flags().data_name}_{FLAGS.model}')


def _check_eval_flags(workdir: Path) -> None:
  """In eval and predict mode the recorded config rules: a flag of a `run` field that contradicts
  it is a mistake worth naming (`eval` and `runtime` fields may differ)."""
  from zoo import workdir as workdir_lib
  recorded = workdir_lib.read_config(workdir)
  if recorded is None:
    return
  for name in Config.fields_with_role('run'):
    if name in ('model_settings', 'rules'):
      continue
    if FLAGS[name].present and FLAGS[name].value != getattr(recorded, name):
      raise ZooError(f'--{name}={FLAGS[name].value} contradicts {workdir}, which was trained '
                     f'with {name}={getattr(recorded, name)!r}; drop the flag or pass another --workdir')
  if FLAGS['rule'].present and tuple(FLAGS.rule) != recorded.rules:
    raise ZooError(f'--rule contradicts {workdir}, which was trained with rules {list(recorded.rules)}; drop the '
                   'flag or pass another --workdir')
  from zoo import models
  given = _given_model_settings(FLAGS)
  if not given or recorded.model not in models.MODELS:
    return
  models.resolve_settings(recorded.model, given)  # names and types
  settings = models.contract_of(recorded.model).settings
  for name, value in given.items():
    recorded_value = recorded.model_settings.get(name)
    same = recorded_value is not None and (tuple(recorded_value) if isinstance(value, tuple) else recorded_value) == value
    if settings[name].role == 'run' and not same:
      raise ZooError(f'--model.{name}={_shown(value)} contradicts {workdir}, which was trained with '
                     f'{recorded.model}\'s {name}={recorded_value!r}; drop the flag or pass another --workdir')


def _configure_logging() -> None:
  absl_logging.set_verbosity(absl_logging.ERROR)  # orbax and TFDS chatter (INFO, WARNING) goes through absl
  logging.getLogger('zoo').setLevel(logging.INFO)


def _train(workdir: Path) -> dict:
  from zoo.training import loop
  start = time.perf_counter()
  history = loop.train_and_evaluate(config_from_flags(), workdir, FLAGS.data_dir)
  summary = {'workdir': str(workdir), 'epochs': len(history),
             'eval_split': FLAGS.eval_split, 'wall_seconds': round(time.perf_counter() - start, 1)}
  # The last evaluated epoch: a SIGTERM stop may come after an epoch that was not evaluated.
  evaluated = [entry for entry in history if 'eval_accuracy' in entry]
  if evaluated:
    summary.update(eval_epoch=evaluated[-1]['epoch'], eval_accuracy=evaluated[-1]['eval_accuracy'],
                   eval_loss=evaluated[-1]['eval_loss'])
  return summary


def _evaluate(workdir: Path) -> dict:
  from zoo.training import loop
  overrides = {name: FLAGS[name].value for name in Config.fields_with_role('eval', 'runtime') if FLAGS[name].present}
  return loop.evaluate(workdir, FLAGS.data_dir, step=FLAGS.checkpoint_step,
                       model_settings=_given_model_settings(FLAGS), output=FLAGS.eval_output,
                       weights=FLAGS.eval_weights, **overrides)


def _find_learning_rate() -> dict:
  from zoo import workdir as workdir_lib
  from zoo.training import lr_find
  folder = Path(FLAGS.workdir) if FLAGS.workdir else Path.cwd()
  folder.mkdir(parents=True, exist_ok=True)
  given = {name: FLAGS[f'lr_find_{name}'].value for name in ('steps', 'start', 'end')}
  return lr_find.find(config_from_flags(), FLAGS.data_dir, workdir_lib.lr_find_plot_path(folder),
                      **{name: value for name, value in given.items() if value is not None})


def run(argv) -> None:
  if len(argv) > 1:
    from absl import app
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  _configure_logging()
  try:
    accelerators.setup()
    workdir = _workdir()
    if FLAGS.mode == 'train':
      print(json.dumps(_train(workdir)), flush=True)
      return
    if FLAGS.mode == 'lr_find':
      print(json.dumps(_find_learning_rate()), flush=True)
      return
    from zoo import packed
    workdir = packed.locate(workdir)  # a shipped model's name, a .zoo file or URL: its folder
    _check_eval_flags(workdir)
    if FLAGS.mode == 'eval':
      print(json.dumps(_evaluate(workdir)), flush=True)
    else:
      predictions.predict(workdir, FLAGS.checkpoint_step)
  except ZooError as e:
    exit_with(e)
