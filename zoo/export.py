"""A trained workdir's model as a file other runtimes load: ONNX (onnxruntime, ...) or a TensorFlow
SavedModel (TensorFlow Serving, `tf.saved_model.load`).

Both formats hold one function, `serving_function(trained)`: raw inputs -> class probabilities, the
same jax.numpy code `zoo.load(workdir).predict` runs, so an exported model gives what predict gives.
- Images: uint8 [N, H, W, C] at the training size; the scaling (`dataset.preprocess_on_device`) and
  any normalisation or test-time augmentation inside the model are in the graph.
- Texts: the SavedModel takes raw strings and tokenizes them in the graph with TensorFlow string
  ops that follow `zoo.data.tokenizer`'s Keras rules (`tensorflow_tokenizer`) over the workdir's
  vocabulary; ONNX takes int32 token ids
  [N, max_length] and the vocabulary is written beside it (line i is the word of id i).
- Output: float32 [N, classes] probabilities (two-class models: [1 - p, p] from the sigmoid).
  The batch dimension is dynamic.

Converters: jax2tf (in JAX) writes the SavedModel, its computation as StableHLO for CPU and CUDA.
jax2onnx writes ONNX, from the function's jaxpr (`_portable_jaxpr_function`): lax primitives only,
so that none of jax2onnx's jax.numpy/Flax monkey patches (which break `nn.RNN`'s scan and skip the
zoo's CPU convolution) take part.
"""
import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jax_core

from zoo import inference, packed
from zoo.data import tokenizer as tokenizer_lib
from zoo.errors import ZooError
from zoo.models import probabilities_jnp

FORMATS = ('onnx', 'saved_model', 'zoo')
EXPORT_DIR = 'export'
ONNX_FILE = 'model.onnx'
SAVED_MODEL_DIR = 'saved_model'
ZOO_FILE = 'model.zoo'  # a packed model (`zoo.packed`): what `zoo.load` and every --workdir take
CLASS_NAMES_FILE = 'class_names.txt'
BATCH = 'batch'  # the name of the dynamic batch dimension in both formats
# The platform whose branch of `lax.platform_dependent` goes into the ONNX graph: the zoo's
# convolutions run as slices + matmul on XLA:CPU only; everywhere else, and so in ONNX, as a Conv.
ONNX_PLATFORM = 'cuda'


def default_output(workdir, export_format: str) -> Path:
  """`<workdir>/export/model.onnx`, `.../saved_model/` or `.../model.zoo`; for a packed model (a
  shipped one, a .zoo file) `export/...` in the current directory: nothing is written beside it."""
  folder = Path(EXPORT_DIR) if packed.is_packed(workdir) else Path(workdir) / EXPORT_DIR
  return folder / {'onnx': ONNX_FILE, 'saved_model': SAVED_MODEL_DIR, 'zoo': ZOO_FILE}[export_format]


def vocabulary_path(onnx_path: Path) -> Path:
  """Where a text model's ONNX file has its vocabulary: `model.onnx` -> `model.vocabulary.txt`."""
  return onnx_path.with_name(f'{onnx_path.stem}.vocabulary.txt')


def serving_function(trained: inference.TrainedModel):
  """uint8 images or int32 token ids [N, ...] -> float32 probabilities [N, classes], in jax.numpy:
  what `trained.predict` computes after reading files or tokenizing."""
  model, variables, dataset = trained.model, trained.variables, trained.dataset

  def serve(inputs):
    if trained.kind == 'image':
      inputs = dataset.preprocess_on_device(inputs, None)
    logits = model.apply(variables, inputs, train=False).astype(jnp.float32)
    return probabilities_jnp(logits)

  return serve


def input_shape(trained: inference.TrainedModel) -> tuple:
  """One example's shape: (H, W, C) for images, (max_length,) for token ids."""
  if trained.kind == 'image':
    return tuple(trained.input_shape)
  return (int(trained.description['inputs']['max_length']),)


def input_dtype(trained: inference.TrainedModel):
  return np.uint8 if trained.kind == 'image' else np.int32


def export(workdir, export_format: str, output=None, step: int | None = None, dtype: str = 'float32') -> list[Path]:
  """Exports `workdir`'s checkpoint `step` (default: the newest readable) to `output` (default:
  `default_output`); returns the paths written. Nothing existing is overwritten. `dtype`: the
  variables' type in a `.zoo` file (float16 halves it)."""
  if export_format not in FORMATS:
    raise ZooError(f'--format={export_format} is not an export format; pass one of: {", ".join(FORMATS)}')
  workdir = packed.locate(workdir)
  output = Path(output) if output else default_output(workdir, export_format)
  if export_format == 'zoo':
    return [packed.pack(workdir, output, step, dtype)]
  trained = inference.load(workdir, step)
  targets = [output] + ([vocabulary_path(output)] if export_format == 'onnx' and trained.kind == 'text' else [])
  for target in targets:
    if target.exists():
      raise ZooError(f'{target} exists already; remove it or pass --output=PATH elsewhere (nothing is overwritten)')
  _make_folder(output.parent)
  if export_format == 'onnx':
    return write_onnx(trained, output)
  return [write_saved_model(trained, output)]


def _make_folder(folder: Path) -> None:
  """Creates `folder` (and its parents), or says in one line why it cannot: a file in the way, no
  permission, a full disk."""
  blocking = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
  if blocking is not None:
    raise ZooError(f'cannot write under {folder}: {blocking} is a file, not a folder; '
                   'pass --output=PATH under a folder')
  try:
    folder.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise ZooError(f'cannot create the folder {folder} ({e.strerror or e}); pass --output=PATH under a folder '
                   'you can write') from None


def _converter_failure(trained, export_format: str, error: Exception) -> ZooError:
  """A converter's own failure (a bug or a gap in jax2onnx or jax2tf, not the user's input) as one line
  that names the model and the format and says what to try."""
  other = 'saved_model' if export_format == 'onnx' else 'onnx'
  lines = [line.strip() for line in str(error).strip().splitlines()]
  # tf.function prefixes the error with "in user code:" and a stack; its own line names the type again.
  own = [line[len(type(error).__name__) + 2:] for line in lines if line.startswith(f'{type(error).__name__}: ')]
  first_line = (own or lines or [''])[0][:300]
  return ZooError(f'--model={trained.config.model} could not be exported to {export_format}: the converter failed '
                  f'({type(error).__name__}: {first_line}); try --format={other}, or report it with the command '
                  'you ran')


def _metadata(trained: inference.TrainedModel) -> dict[str, str]:
  """What travels with the file: class names, the model, the checkpoint step, the input format."""
  return {'class_names': json.dumps(trained.class_names), 'model': trained.config.model,
          'step': str(trained.step), 'kind': trained.kind,
          'inputs': json.dumps(trained.description['inputs']),
          'outputs': f'float32 [{BATCH}, {len(trained.class_names)}]: class probabilities'}


# ONNX


def _converter():
  """jax2onnx's `to_onnx`, with the rules for lax primitives loaded (all the jaxpr holds)."""
  try:
    import jax2onnx
    import onnx  # noqa: F401 (the file is written through it)
    from jax2onnx.plugins import plugin_system
  except ImportError as e:
    raise ZooError(f'--format=onnx needs the export extra ({e.name} is not installed); '
                   "pip install -e '.[export]'") from None
  # jax2onnx imports every plugin it ships (Equinox, MaxText examples, ...) on first use, most of its
  # start-up; the lax primitives' rules, all a jaxpr needs, are under plugins/jax.
  if hasattr(plugin_system, '_import_tree') and not getattr(plugin_system, '_already_imported_plugins', True):
    plugin_system._import_tree(Path(plugin_system.__file__).parent / 'jax', 'jax2onnx.plugins.jax')
    plugin_system._already_imported_plugins = True
  return jax2onnx.to_onnx


def _live_equations(jaxpr) -> list:
  """`jaxpr`'s equations that its outputs depend on (or that have effects), in order: the
  throw-away random key `nn.RNN` draws for its zero initial state is dropped, not converted."""
  live = {v for v in jaxpr.outvars if not isinstance(v, jax_core.Literal)}
  kept = []
  for equation in reversed(jaxpr.eqns):
    if equation.effects or any(v in live for v in equation.outvars):
      kept.append(equation)
      live.update(v for v in equation.invars if not isinstance(v, jax_core.Literal))
  return kept[::-1]


def _platform_index(platforms, platform: str) -> int:
  """`lax.platform_dependent`'s branch for `platform` (its `platform_index` equation's rule)."""
  for index, names in enumerate(platforms):
    if names is not None and platform in names:
      return index
  return next((i for i, names in enumerate(platforms) if names is None), len(platforms))


def _evaluate(jaxpr, consts, *args, platform: str = ONNX_PLATFORM) -> list:
  """Evaluates `jaxpr` by binding its primitives again, as `jax.core.eval_jaxpr` does, but inlining
  nested jits, taking `platform`'s branch of `lax.platform_dependent`, and writing the two
  primitives jax2onnx has no rule for in JAX 0.10 (`stack`, integer `rem` with a dynamic batch) and
  `pad` (whose rule needs a static batch) with ones it has."""
  env = {}
  read = lambda atom: atom.val if isinstance(atom, jax_core.Literal) else env[atom]
  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for equation in _live_equations(jaxpr):
    name, params, inputs = equation.primitive.name, equation.params, [read(a) for a in equation.invars]
    if name == 'platform_index':
      outputs = [np.int32(_platform_index(params['platforms'], platform))]
    elif name == 'cond' and isinstance(inputs[0], np.integer):  # a platform_dependent switch
      branch = params['branches'][int(inputs[0])]
      outputs = _evaluate(branch.jaxpr, branch.consts, *inputs[1:], platform=platform)
    elif name in ('jit', 'pjit', 'closed_call'):
      inner = params.get('jaxpr') or params['call_jaxpr']
      outputs = _evaluate(inner.jaxpr, inner.consts, *inputs, platform=platform)
    elif name == 'stack':
      axis = params['axis']
      outputs = [jax.lax.concatenate([jax.lax.expand_dims(x, (axis,)) for x in inputs], axis)]
    elif name == 'pad' and all(interior == 0 and low >= 0 and high >= 0
                               for low, high, interior in params['padding_config']):
      outputs = [_pad_by_concatenation(*inputs, params['padding_config'])]
    elif name == 'rem' and jnp.issubdtype(inputs[0].dtype, jnp.integer):
      x, y = inputs
      outputs = [x - jax.lax.div(x, y) * y]  # lax.rem's definition: truncated division
    else:
      result = equation.primitive.bind(*inputs, **equation.primitive.get_bind_params(params))
      outputs = result if equation.primitive.multiple_results else [result]
    env.update(zip(equation.outvars, outputs))
  return [read(v) for v in jaxpr.outvars]


def _pad_by_concatenation(x, value, padding_config):
  """`lax.pad` without interior or negative padding, as blocks of `value` concatenated on each side:
  jax2onnx's rule for `pad` needs every dimension known, and the batch is not."""
  for axis, (low, high, _) in enumerate(padding_config):
    block = lambda width: jax.lax.broadcast_in_dim(jnp.asarray(value, x.dtype),
                                                   (*x.shape[:axis], int(width), *x.shape[axis + 1:]), ())
    parts = ([block(low)] if low > 0 else []) + [x] + ([block(high)] if high > 0 else [])
    x = jax.lax.concatenate(parts, axis) if len(parts) > 1 else x
  return x


def _portable_jaxpr_function(function, spec):
  """`function` traced once to a jaxpr, as a function that replays it with lax primitives only."""
  closed = jax.make_jaxpr(function)(spec)
  return lambda inputs: _evaluate(closed.jaxpr, closed.consts, inputs)[0]


def write_onnx(trained: inference.TrainedModel, output: Path) -> list[Path]:
  """`output` (.onnx; opset 23, input 'images' uint8 or 'token_ids' int32, output 'probabilities'),
  class names and input format in its metadata properties, and for text models the vocabulary."""
  to_onnx = _converter()
  import onnx
  batch, = jax.export.symbolic_shape(BATCH)
  spec = jax.ShapeDtypeStruct((batch, *input_shape(trained)), input_dtype(trained))
  try:
    with contextlib.redirect_stdout(sys.stderr):  # jax2onnx prints DEBUG lines; stdout is the caller's
      model = to_onnx(_portable_jaxpr_function(serving_function(trained), spec), inputs=[spec],
                      model_name=f'zoo_{trained.config.model}',
                      input_names=['images' if trained.kind == 'image' else 'token_ids'],
                      output_names=['probabilities'])
  except NotImplementedError as e:  # jax2onnx: "No plugins registered for primitive 'x'"
    raise ZooError(f'--model={trained.config.model} cannot be exported to onnx: the converter (jax2onnx) '
                   f'lacks an operation it uses ({e}); export it with --format=saved_model instead') from None
  except Exception as e:  # anything else jax2onnx raises is its own failure, not the user's input
    raise _converter_failure(trained, 'onnx', e) from None
  metadata = _metadata(trained)
  files = {}
  if trained.kind == 'text':
    vocabulary = vocabulary_path(output)
    metadata['vocabulary'] = vocabulary.name
    metadata['tokenizer'] = ('token_ids: int32 [batch, max_length] from the words in the vocabulary file (line i '
                             'is id i; 0 padding, 1 out of vocabulary), '
                             + trained.description['inputs']['preprocessing'])
    words = ['', '[UNK]'] + trained.dataset.tokenizer().vocabulary  # ids 0 (padding) and 1 (out of vocabulary)
    files[vocabulary] = '\n'.join(words).encode('utf-8')
  onnx.helper.set_model_props(model, metadata)
  files[output] = model.SerializeToString()
  _write_all_or_nothing(files)
  return list(files)


def _write_all_or_nothing(files: dict[Path, bytes]) -> None:
  """Writes every file, each through a temporary name, or none: a failure (a full disk) removes what
  this call wrote, so that a retry of the same export is not refused for a half-written one."""
  written = []
  try:
    for path, data in files.items():
      temporary = path.with_name(f'{path.name}.{os.getpid()}.tmp')
      try:
        temporary.write_bytes(data)
        temporary.replace(path)  # a reader sees no file or the whole file
      finally:
        temporary.unlink(missing_ok=True)
      written.append(path)
  except OSError as e:
    for done in written:
      done.unlink(missing_ok=True)
    raise ZooError(f'cannot write {path} ({e.strerror or e}); free some space or pass --output=PATH elsewhere '
                   '(nothing was written)') from None


# SavedModel


def write_saved_model(trained: inference.TrainedModel, output: Path) -> Path:
  """A SavedModel directory. Signatures: 'serving_default' (images uint8 [N, H, W, C], or texts
  string [N]) and for text 'token_ids' (int32 [N, max_length]) -> {'probabilities'}. The class
  names are `assets/class_names.txt` (one a line) and the attribute `class_names` (a string
  tf.Variable); `metadata` holds `_metadata` as JSON."""
  from zoo.data import tensorflow_import
  from jax.experimental import jax2tf
  tf = tensorflow_import.tensorflow()
  shape = input_shape(trained)
  dtype = tf.uint8 if trained.kind == 'image' else tf.int32
  polymorphic = f'({BATCH}, {", ".join(str(d) for d in shape)})'
  # StableHLO for CPU and CUDA: the zoo's convolutions differ by platform (`lax.platform_dependent`).
  converted = jax2tf.convert(serving_function(trained), polymorphic_shapes=[polymorphic], with_gradient=False,
                             native_serialization_platforms=('cpu', 'cuda'))
  temporary = output.with_name(f'{output.name}.{os.getpid()}.tmp')
  shutil.rmtree(temporary, ignore_errors=True)  # a leftover of this process id's earlier crash
  try:
    _save_module(tf, trained, converted, shape, dtype, temporary)
    (temporary / 'model').replace(output)
  except ZooError:
    raise
  except OSError as e:
    raise ZooError(f'cannot write {output} ({e.strerror or e}); free some space or pass --output=PATH elsewhere '
                   '(nothing was written)') from None
  except Exception as e:  # jax2tf's or TensorFlow's own failure while tracing and saving
    raise _converter_failure(trained, 'saved_model', e) from None
  finally:
    shutil.rmtree(temporary, ignore_errors=True)
  return output


def _save_module(tf, trained: inference.TrainedModel, converted, shape: tuple, dtype, temporary: Path) -> None:
  """Saves the SavedModel of `converted` as `temporary/model`."""
  module = tf.Module()
  module.probabilities = tf.function(converted, autograph=False,
                                     input_signature=[tf.TensorSpec([None, *shape], dtype)])
  module.class_names = tf.Variable(trained.class_names, trainable=False, dtype=tf.string)
  module.metadata = tf.Variable(json.dumps(_metadata(trained)), trainable=False, dtype=tf.string)
  temporary.mkdir(parents=True)
  (temporary / CLASS_NAMES_FILE).write_text('\n'.join(trained.class_names), encoding='utf-8')
  module.class_names_file = tf.saved_model.Asset(str(temporary / CLASS_NAMES_FILE))
  if trained.kind == 'image':
    @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.uint8, name='images')])
    def serve(images):
      return {'probabilities': module.probabilities(images)}
    signatures = {'serving_default': serve}
  else:
    module.tokenizer = tensorflow_tokenizer(trained.dataset.tokenizer())

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='texts')])
    def serve(texts):
      return {'probabilities': module.probabilities(module.tokenizer(texts))}

    @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.int32, name='token_ids')])
    def serve_token_ids(token_ids):
      return {'probabilities': module.probabilities(token_ids)}
    signatures = {'serving_default': serve, 'token_ids': serve_token_ids}
  tf.saved_model.save(module, str(temporary / 'model'), signatures=signatures)


def _character_class(characters: str) -> str:
  """An RE2 character class of exactly `characters` (every one escaped, tab and newline by name)."""
  escaped = {'\t': '\\t', '\n': '\\n', '\f': '\\f', '\r': '\\r', '\v': '\\v'}
  return '[' + ''.join(escaped.get(c, c if c.isalnum() or c == ' ' else '\\' + c) for c in characters) + ']'


def tensorflow_tokenizer(python_tokenizer: tokenizer_lib.Tokenizer):
  """`python_tokenizer` as a tf.Module: the class is defined here so that this module imports
  without TensorFlow."""
  from zoo.data import tensorflow_import
  tf = tensorflow_import.tensorflow()

  class Tokenizer(tf.Module):
    """`zoo.data.tokenizer.Tokenizer` in TensorFlow string ops: texts string [N] -> int32 ids
    [N, max_length], the same ids for the same texts (a SavedModel holds no Python)."""

    def __init__(self, python_tokenizer: tokenizer_lib.Tokenizer):
      super().__init__()
      self.max_length = python_tokenizer.max_length
      words = python_tokenizer.vocabulary
      first = tokenizer_lib.OUT_OF_VOCABULARY + 1
      self.table = tf.lookup.StaticHashTable(
          tf.lookup.KeyValueTensorInitializer(tf.constant(words, tf.string),
                                              tf.range(first, first + len(words), dtype=tf.int32)),
          default_value=tokenizer_lib.OUT_OF_VOCABULARY)

    def __call__(self, texts):
      # `split_words`: Unicode lower-casing, each filter character a space
      texts = tf.strings.lower(texts, encoding='utf-8')
      texts = tf.strings.regex_replace(texts, _character_class(tokenizer_lib.FILTERS), ' ')
      words = tf.strings.split(texts, sep=' ')  # with a separator, empty strings are kept: dropped next
      words = tf.ragged.boolean_mask(words, tf.strings.length(words) > 0)
      ids = tf.ragged.map_flat_values(self.table.lookup, words[:, :self.max_length])
      return ids.to_tensor(default_value=tokenizer_lib.PADDING, shape=[None, self.max_length])

  return Tokenizer(python_tokenizer)
