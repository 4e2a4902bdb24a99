"""Flags and `main` shared by every experiment: parse, pick the accelerator, train or evaluate.

An experiment module only names its defaults (`define_flags(Config(...))`) and calls `app.run(main)`;
everything else, including the one training loop, lives in `zoo`.
"""
import dataclasses
import json
import logging
import os
import sys
import time
import typing
from pathlib import Path

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TensorFlow only reads data here: keep it quiet.

import numpy as np
from absl import app, flags
from absl import logging as absl_logging

from zoo import cache_dirs
from zoo.errors import ZooError
from zoo.training.config import Config

FLAGS = flags.FLAGS

_HELP = {
    'dataset': 'TFDS classification dataset name (e.g. mnist, fashion_mnist, cifar10, cifar100, svhn_cropped; '
               'imdb_reviews, ag_news_subset, yelp_polarity_reviews); shape and classes from its metadata.',
    'image_folder': 'Train on your own images: DIR/<split>/<class name>/<image file>, any format Pillow reads '
                    '(replaces --dataset; splits are the subfolders, slicing such as "train[:90%]" works).',
    'text_folder': 'Train on your own texts: DIR/<split>/<class name>/<file>.txt, UTF-8 (replaces --dataset).',
    'image_size': 'Resize images to N x N (0: the dataset\'s own size; folders: 32).',
    'model': 'Model name from zoo.models.MODELS.',
    'epochs': 'Number of passes over --train_split.',
    'batch_size': 'Global batch size; must divide by the number of devices.',
    'eval_batch_size': 'Global eval batch size; the last batch is padded and masked.',
    'optimizer': 'adam | adamw | sgd (momentum --momentum, --nesterov).',
    'learning_rate': 'Peak learning rate.',
    'schedule': 'constant | cosine | warmup_cosine | onecycle | triangular (optax schedules; '
                'triangular is airbench94\'s: 0.2 lr -> lr at --warmup_epochs -> 0.07 lr at the end).',
    'warmup_epochs': 'Linear warm-up length for --schedule=warmup_cosine and triangular.',
    'momentum': 'SGD momentum.',
    'nesterov': 'Nesterov momentum for SGD.',
    'weight_decay': 'Weight decay (decoupled for adamw, L2 for adam and sgd).',
    'weight_decay_scope': 'kernels (biases and BatchNorm offsets are not decayed) | all.',
    'label_smoothing': 'Label smoothing for the cross-entropy loss.',
    'bias_lr_multiplier': 'Gradient factor for BatchNorm offsets, applied before weight decay (airbench: 64).',
    'augment': 'Random crop (--crop_padding px reflect padding) and horizontal flip of training images.',
    'crop_padding': 'Reflect padding of the random crop, in pixels (4: He et al.; 2: airbench).',
    'alternating_flip': 'With --augment: mirror each image at random in even epochs and the other way '
                        'in odd ones (airbench), instead of a fresh coin every epoch.',
    'lookahead': 'Average the weights and BatchNorm statistics as airbench94 does (see --lookahead_*).',
    'lookahead_start_epoch': 'First epoch of --lookahead.',
    'lookahead_every_steps': 'Steps between --lookahead averaging steps.',
    'lookahead_decay': 'Per-step decay of the --lookahead average at the end of training (it rises '
                       'as (step / total steps)**3).',
    'eval_every_epochs': 'Evaluate --eval_split every this many epochs (and after the last).',
    'compute_dtype': 'float32 | bfloat16 (models with a dtype field, e.g. airbench): activations and '
                     'conv/matmul inputs; parameters stay float32. Fast on GPUs/TPUs, slow on most CPUs.',
    'seed': 'Seeds parameters, data order, augmentation and dropout.',
    'train_split': 'TFDS split to train on (slicing works: "train[:45000]").',
    'eval_split': 'TFDS split to evaluate on after every epoch and in --mode=eval.',
    'checkpoint_every_steps': 'Also checkpoint every this many steps (0: once per epoch).',
    'keep_checkpoints': 'How many recent checkpoints to keep.',
    'log_every_steps': 'Progress line every this many steps.',
    'vocab_size': 'Text only: vocabulary size, OOV and padding ids included.',
    'max_length': 'Text only: tokens per example after post-padding/truncation.',
    'input_pipeline': 'auto | device (split held on the devices, batches gathered and augmented in '
                      'the jitted step) | tf_data (batches streamed from the host); same results.',
    'tta_level': 'Test-time augmentation at evaluation (airbench): 0 none, 1 mirror, 2 mirror + 1-pixel '
                 'translations, -1 the model\'s default; may differ in --mode=eval.',
    'steps_per_dispatch': 'With --input_pipeline=device: train steps per jitted call.',
    'split_cache': 'Directory for decoded TFDS splits (.npz; used with an explicit --data_dir): later runs skip decoding '
                   '30,000 PNGs (~3 s for the seed recipe\'s splits); \'\' turns it off.',
    'tensorboard': 'Write TensorBoard scalars under <workdir>/tensorboard.',
}

# Flags that change what is evaluated, not what was trained: allowed to differ in --mode=eval.
_EVAL_OVERRIDES = ('eval_split', 'eval_batch_size', 'tta_level')
# Flags that cannot change an evaluation or a prediction (how fast, what is logged or kept): accepted.
_EVAL_ACCEPTS = (*Config.RUNTIME_FIELDS, 'log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints')


def define_flags(defaults: Config) -> None:
  """Defines --accelerator, --mode, --workdir, --data_dir, multi-host flags and one flag per Config field."""
  flags.DEFINE_enum('accelerator', 'auto', ['auto', 'cpu', 'gpu', 'tpu'],
                    'Where JAX computes; auto takes the best available.')
  flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'predict'],
                    'train (resumes from the workdir\'s latest checkpoint), eval (a workdir\'s checkpoint '
                    'on --eval_split), or predict (--image files or --text strings -> one JSON line each).')
  flags.DEFINE_multi_string('text', None, '--mode=predict, text models: a text to classify (repeatable); '
                            'without it, one text per line from stdin.')
  flags.DEFINE_multi_string('image', None, '--mode=predict, image models: an image file to classify, any '
                            'format and size Pillow opens (repeatable); without it, one path per line from stdin.')
  flags.DEFINE_string('workdir', None, 'Run directory: config, checkpoints, history, plots, TensorBoard. '
                      'Default: workdirs/<dataset or folder name>_<model>.')
  flags.DEFINE_string('data_dir', None, 'TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).')
  flags.DEFINE_string('coordinator_address', None, 'Multi-process: host:port of process 0 '
                      '(jax.distributed). On a TPU pod or under SLURM, leave the three flags unset: '
                      'JAX detects them.')
  flags.DEFINE_integer('num_processes', None, 'Multi-process: how many processes train together.')
  flags.DEFINE_integer('process_id', None, 'Multi-process: this process\'s index, 0 .. num_processes-1.')
  flags.DEFINE_integer('checkpoint_step', None, '--mode=eval/predict: use this step instead of the latest.')
  flags.DEFINE_string('compilation_cache', cache_dirs.default_dir('jax_compilation'),
                      'Directory of JAX\'s persistent compilation cache: a rerun of the same program '
                      'loads its compiled steps instead of compiling them ("" turns it off).')
  flags.DEFINE_bool('deterministic', False,
                    'GPU: XLA\'s deterministic ops (--xla_gpu_deterministic_ops: no autotuning, deterministic '
                    'reductions and convolutions), so a seed reproduces bit for bit; slower. CPU runs are '
                    'deterministic already.')
  for field in dataclasses.fields(Config):
    default = getattr(defaults, field.name)
    kind = typing.get_args(field.type)[0] if typing.get_origin(field.type) is typing.Union else field.type
    define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
              str: flags.DEFINE_string}[kind]
    define(field.name, default, _HELP[field.name])


def config_from_flags() -> Config:
  """The flags as a Config; a folder of your own files replaces the TFDS dataset."""
  values = {f.name: FLAGS[f.name].value for f in dataclasses.fields(Config)}
  if values['image_folder'] or values['text_folder']:
    values['dataset'] = ''  # (a recipe's --dataset is overridden: the same recipe on your own files)
  return Config(**values)


def _workdir() -> Path:
  return Path(FLAGS.workdir or f'workdirs/{config_from_flags().data_name}_{FLAGS.model}')


def select_accelerator(name: str) -> None:
  """Pins JAX to the asked platform before any computation; one line if it is not there."""
  import jax
  # Not 'gpu': JAX expands it to cuda,rocm,oneapi and fails unless all three plugins are installed.
  # JAX already prefers a GPU over the CPU; the check below says so if there is none.
  platforms = {'cpu': 'cpu', 'tpu': 'tpu'}.get(name)
  if FLAGS.deterministic:  # read by XLA when the backend starts, i.e. at jax.devices() below
    os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} --xla_gpu_deterministic_ops=true'.strip()
  if platforms:
    jax.config.update('jax_platforms', platforms)
  if FLAGS.compilation_cache:
    # A rerun loads its compiled steps instead of compiling them; measured in docs/performance.md.
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(FLAGS.compilation_cache))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  _start_distributed(jax)
  try:
    devices = jax.devices()
  except RuntimeError as e:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ZooError(f'--accelerator={name}: JAX finds no {name.upper()} here ({reason}); install the '
                   f'matching extra (pip install -e ".[cuda]" or ".[tpu]") or pass --accelerator=cpu') from e
  if name == 'gpu' and devices[0].platform not in ('gpu', 'cuda', 'rocm'):
    raise ZooError(f'--accelerator=gpu: JAX sees only {devices[0].platform} devices; '
                   'install the CUDA extra (pip install -e ".[cuda]") or pass --accelerator=cpu')


def _in_cluster() -> bool:
  """A launcher whose settings jax.distributed.initialize() reads by itself (SLURM, TPU pods)."""
  return (int(os.environ.get('SLURM_NTASKS', '1')) > 1
          or ',' in os.environ.get('TPU_WORKER_HOSTNAMES', ''))


def _start_distributed(jax) -> None:
  """Joins the processes of a multi-process run before any device is touched."""
  given = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
  if all(v is None for v in given) and not _in_cluster():
    return
  if any(v is None for v in given) and not _in_cluster():
    raise ZooError('--coordinator_address, --num_processes and --process_id go together; pass all three '
                   '(e.g. --coordinator_address=localhost:1234 --num_processes=2 --process_id=0)')
  if (FLAGS.accelerator == 'cpu' or os.environ.get('JAX_PLATFORMS') == 'cpu'):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # CPU collectives across processes
  try:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  except Exception as e:
    raise ZooError(f'could not join the multi-process run at {FLAGS.coordinator_address} '
                   f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}); check the address '
                   'and that every process got the same --num_processes') from e


def _check_eval_flags(workdir: Path) -> None:
  """In eval mode the recorded config rules; a contradicting flag is a mistake worth naming."""
  from zoo.training import config as config_lib
  recorded = config_lib.read_recorded(workdir)
  if recorded is None:
    return
  for field in dataclasses.fields(Config):
    if field.name not in (*_EVAL_OVERRIDES, *_EVAL_ACCEPTS) and FLAGS[field.name].present:
      if FLAGS[field.name].value != getattr(recorded, field.name):
        raise ZooError(f'--{field.name}={FLAGS[field.name].value} contradicts {workdir}, which was trained '
                       f'with {field.name}={getattr(recorded, field.name)!r}; drop the flag or pass another --workdir')


def _configure_logging() -> None:
  absl_logging.set_verbosity(absl_logging.ERROR)  # orbax and TFDS chatter (INFO, WARNING) goes through absl
  logging.getLogger('zoo').setLevel(logging.INFO)


def run(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  _configure_logging()
  try:
    select_accelerator(FLAGS.accelerator)
    from zoo.training import loop
    workdir = _workdir()
    if FLAGS.mode == 'predict':
      _check_eval_flags(workdir)
      _predict(workdir)
      return
    if FLAGS.mode == 'eval':
      _check_eval_flags(workdir)
      split = FLAGS.eval_split if FLAGS['eval_split'].present else None
      overrides = {name: FLAGS[name].value for name in (*_EVAL_OVERRIDES, *Config.RUNTIME_FIELDS)
                   if name != 'eval_split' and FLAGS[name].present}  # the split is evaluate's own argument
      report = loop.evaluate(workdir, FLAGS.data_dir, split=split, step=FLAGS.checkpoint_step, **overrides)
      print(json.dumps(report), flush=True)
      return
    start = time.perf_counter()
    history = loop.train_and_evaluate(config_from_flags(), workdir, FLAGS.data_dir)
    summary = {'workdir': str(workdir), 'epochs': len(history),
               'eval_split': FLAGS.eval_split, 'wall_seconds': round(time.perf_counter() - start, 1)}
    # The last evaluated epoch: a SIGTERM stop may come after an epoch that was not evaluated.
    evaluated = [entry for entry in history if 'eval_accuracy' in entry]
    if evaluated:
      summary.update(eval_epoch=evaluated[-1]['epoch'], eval_accuracy=evaluated[-1]['eval_accuracy'],
                     eval_loss=evaluated[-1]['eval_loss'])
    print(json.dumps(summary), flush=True)
  except ZooError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(1)


def _inputs_from_stdin(flag: str, what: str) -> list[str]:
  """One input per non-empty line of standard input; a terminal there gets a hint, not a wait."""
  if sys.stdin is None or sys.stdin.isatty():
    raise ZooError(f'--mode=predict needs {what}; pass {flag} (repeatable) or pipe them, one per line, '
                   'on standard input')
  return [line.rstrip('\n') for line in sys.stdin if line.strip()]


def _predict(workdir: Path) -> None:
  """One JSON line per image or text, in the order given. Unreadable images are named on stderr
  after every readable one is printed, and the exit status is then 1."""
  import zoo
  from zoo import inference
  trained = zoo.load(workdir, step=FLAGS.checkpoint_step, data_dir=FLAGS.data_dir)
  names = trained.class_names
  if trained.kind == 'text':
    if FLAGS.image:
      raise ZooError(f'--image: {workdir} holds a text model ({trained.config.data_name}); pass --text instead')
    texts = FLAGS.text or _inputs_from_stdin('--text="..."', 'texts')
    for text, p in zip(texts, trained.predict(texts)):
      row = {'text': text, 'label': names[int(p.argmax())]}
      if len(names) == 2:
        row['p_positive'] = round(float(p[1]), 4)
      else:
        row.update(p=round(float(p.max()), 4))
      print(json.dumps(row), flush=True)
    return
  if FLAGS.text:
    raise ZooError(f'--text: {workdir} holds an image model ({trained.config.data_name}); pass --image instead')
  paths = FLAGS.image or _inputs_from_stdin('--image=FILE', 'image files')
  readable, images, failures = [], [], []
  for path in paths:
    try:
      images.append(inference.read_image(path, trained.input_shape))
      readable.append(path)
    except ZooError as e:
      failures.append(e)
  if images:
    for path, p in zip(readable, trained.predict(np.stack(images))):
      top = np.argsort(-p, kind='stable')[:3]
      print(json.dumps({'image': path, 'label': names[int(top[0])], 'p': round(float(p[top[0]]), 4),
                        'top': [[names[int(i)], round(float(p[i]), 4)] for i in top]}), flush=True)
  if failures:
    for error in failures[:-1]:
      print(f'error: {error}', file=sys.stderr, flush=True)
    raise failures[-1]
