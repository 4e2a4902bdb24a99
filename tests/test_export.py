"""Exported models (`experiments.export`, `zoo/export.py`) give what `zoo.load(W).predict` gives.

Every registered model (the registry's image and text models) is trained for one step on 16 mock
examples (images at 18 x 18, the wide models narrowed: the graph is the same), in this process,
exported to ONNX and to a SavedModel, and run by onnxruntime and by TensorFlow in one process
without JAX;
the probabilities must equal predict's within 1e-5, on a batch and on one row (the batch dimension
is dynamic).
"""
import importlib.util
import json
import os
import select
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, assert_one_line_error, in_ci, train_in_process

EXTRA = ('jax2onnx', 'onnx', 'onnxruntime')
_missing = [name for name in EXTRA if importlib.util.find_spec(name) is None]
if _missing:
  if in_ci():  # CI installs '.[test,export]': a missing converter is a failure there
    pytest.fail(f'the export extra is not installed ({", ".join(_missing)})', pytrace=False)
  pytest.skip(f'the export extra is not installed ({", ".join(_missing)}): pip install -e ".[export]"',
              allow_module_level=True)

import zoo  # noqa: E402
from zoo import export  # noqa: E402
from zoo.errors import ZooError  # noqa: E402
from zoo.models import MODELS, contract_of  # noqa: E402

# The smallest training that writes a workdir: 16 mock examples, one step of 16.
SMALL = ('--epochs=1', '--batch_size=16', '--eval_batch_size=16', '--optimizer=sgd', '--learning_rate=0.05')
TEXT = ('--vocab_size=200', '--max_length=24')
IMAGE = ('--image_size=18',)  # a third of CIFAR-10's pixels (simple_cnn's least): the same graphs, less arithmetic
IMAGE_MODELS = [name for name in MODELS if contract_of(name).input_kind == 'image']
TEXT_MODELS = [name for name in MODELS if contract_of(name).input_kind == 'text']
# Fewer, narrower layers where a model is slow to trace, convert and compile: the same layers, so
# the same operations to export (airbench keeps its test-time augmentation); vit's patch divides 18.
NARROW = {'resnet20': ('--model.blocks_per_stage=1', '--model.widths=8,16,32'),
          'airbench': ('--model.widths=16,32,32',), 'bilstm': ('--model.embed_dim=16', '--model.hidden_size=16'),
          'vit': ('--model.patch_size=6', '--model.width=16', '--model.depth=1', '--model.num_heads=2',
                  '--model.mlp_dim=32', '--model.pool=token'),
          'transformer': ('--model.embed_dim=16', '--model.depth=1', '--model.num_heads=2', '--model.mlp_dim=32')}
TOLERANCE = 1e-5
# Texts the tokenizers must agree on: apostrophes, hyphens, markup, non-ASCII capitals, tabs,
# newlines, carriage returns, no-break spaces, Unicode case mappings, empty, longer than max_length.
TRICKY_TEXTS = ["Don't stop -- it's WELL-made!<br /><br />Great", 'École ÀÉÎ naïve CAFÉ',
                'tab\there\nnew line\r\nCR', '', 'word ' * 50, '  spaces   only ', 'x\u00a0y <BR/>z <br/ >',
                'ÉCOLE?école!', 'İstanbul ǅ ß ΣΑΣ', "don't dont 'quoted'",
                '(a)[b]{c}|d~e`f^g_h@i#j$k%l&m*n+o=p\\q/r:s;t<u>v', '\u00e9\u0301 e\u0301']


def _train(workdir: Path, model: str) -> Path:
  experiment, extra = ('imdb', TEXT) if model in TEXT_MODELS else ('cifar', IMAGE)
  train_in_process(experiment, f'--workdir={workdir}', f'--model={model}', *SMALL, *extra, *NARROW.get(model, ()),
                   examples=16)
  return workdir


def _texts(workdir: Path) -> list[str]:
  """Reviews as users write them: the vocabulary's words with capitals, punctuation, markup and
  apostrophes, unknown words, an empty text, and one longer than --max_length."""
  words = (workdir / 'vocabulary.txt').read_text(encoding='utf-8').split('\n')
  return [f'{words[0].capitalize()} {words[1]}, {words[2]}!', f"It's {words[3]}<br />{words[4]}... NOT {words[0]}",
          'zyxwv qwerty', '', ' '.join(words * 3), f'"{words[5].upper()}"\t({words[6]})\n-- {words[7]}?']


@pytest.fixture(scope='module')
def runtime(tmp_path_factory):
  """One tests/export_runtime.py server for the module: a process that never imports JAX or the zoo,
  started once (TensorFlow and onnxruntime are seconds to import) and asked by every test."""
  log = tmp_path_factory.mktemp('runtime') / 'stderr.txt'
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', CUDA_VISIBLE_DEVICES='')
  with open(log, 'w') as stderr:
    server = subprocess.Popen([sys.executable, str(ROOT / 'tests' / 'export_runtime.py'), '-'], cwd=ROOT, env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True)
  yield server, log
  server.stdin.close()
  server.wait(timeout=60)


def _run_outside_jax(runtime, tmp_path: Path, requests: list[dict]) -> tuple[list, list[dict]]:
  """Runs every request in the process that never imports JAX or the zoo (tests/export_runtime.py)."""
  server, log = runtime
  requests = [dict(r, out=str(tmp_path / f'{i}.npz')) for i, r in enumerate(requests)]
  (tmp_path / 'requests.json').write_text(json.dumps(requests))
  server.stdin.write(f'{tmp_path / "requests.json"}\n')
  server.stdin.flush()
  ready, _, _ = select.select([server.stdout], [], [], 300)
  line = server.stdout.readline() if ready else ''
  assert line, f'the runtime process ended: {log.read_text()[-3000:]}'
  info = json.loads(line)
  assert 'error' not in info, info.get('error')
  assert not info['jax_imported'] and not info['zoo_imported']  # as a server without JAX runs it
  return [np.load(r['out']) for r in requests], info['answers']


def _assert_parity(outputs, expected: np.ndarray):
  """Equal within TOLERANCE, and every probability finite: a NaN in both is a failure, not a match."""
  assert outputs['batch'].shape == expected.shape and outputs['batch'].dtype == np.float32
  assert np.isfinite(expected).all() and np.isfinite(outputs['batch']).all() and np.isfinite(outputs['first']).all()
  np.testing.assert_allclose(outputs['batch'], expected, rtol=0, atol=TOLERANCE, equal_nan=False)
  np.testing.assert_allclose(outputs['first'], expected[:1], rtol=0, atol=TOLERANCE, equal_nan=False)


def test_parity_fails_on_nan_even_where_both_sides_have_it():
  expected = np.array([[0.5, np.nan]], np.float32)
  with pytest.raises(AssertionError):
    _assert_parity({'batch': expected.copy(), 'first': expected[:1].copy()}, expected)


@pytest.mark.parametrize('model', [pytest.param(m, marks=pytest.mark.slow) if m in ('airbench', 'resnet20') else m
                                   for m in IMAGE_MODELS + TEXT_MODELS])
def test_exported_models_give_what_predict_gives(model, runtime, tmp_path):
  workdir = _train(tmp_path / 'w', model)
  trained = zoo.load(workdir)
  if trained.kind == 'image':
    raw = np.random.default_rng(0).integers(0, 256, (7, *trained.input_shape), np.uint8)
    np.save(tmp_path / 'images.npy', raw)
    inputs, onnx_inputs = str(tmp_path / 'images.npy'), str(tmp_path / 'images.npy')
  else:
    raw = inputs = _texts(workdir)
    np.save(tmp_path / 'token_ids.npy', trained.preprocess(raw))
    onnx_inputs = str(tmp_path / 'token_ids.npy')
  expected = trained.predict(raw)

  # ONNX through the command line for one model, the library for the others (the same function).
  if model == 'mlp':
    result = subprocess.run([sys.executable, '-m', 'experiments.export', f'--workdir={workdir}', '--format=onnx'],
                            cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2'),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip())['written'][-1] == str(workdir / 'export' / 'model.onnx')
    onnx_path = workdir / 'export' / 'model.onnx'
    with pytest.raises(ZooError, match='model.onnx exists already; remove it or pass --output=PATH elsewhere'):
      export.export(workdir, 'onnx')  # an existing export is never overwritten
    (tmp_path / 'a_file').write_text('')
    with pytest.raises(ZooError, match=r'a_file is a file, not a folder; pass --output=PATH under a folder'):
      export.export(workdir, 'onnx', tmp_path / 'a_file' / 'deeper' / 'model.onnx')
  else:
    onnx_path = export.export(workdir, 'onnx', tmp_path / 'exported' / 'model.onnx')[-1]
  saved = export.export(workdir, 'saved_model')[0]
  assert saved == workdir / 'export' / 'saved_model'

  requests = [{'format': 'onnx', 'path': str(onnx_path), 'inputs': onnx_inputs},
              {'format': 'saved_model', 'path': str(saved), 'inputs': inputs, 'signature': 'serving_default'}]
  if trained.kind == 'text':  # the SavedModel also takes token ids, as the ONNX file does
    requests.append({'format': 'saved_model', 'path': str(saved), 'inputs': onnx_inputs, 'signature': 'token_ids'})
  outputs, answers = _run_outside_jax(runtime, tmp_path, requests)
  for output in outputs:  # texts: tokenized inside the SavedModel by its serving signature
    _assert_parity(output, expected)

  onnx_info, saved_info = answers[:2]
  assert onnx_info['class_names'] == trained.class_names and onnx_info['metadata']['model'] == model
  assert onnx_info['input_shape'][0] == 'batch' and onnx_info['metadata']['step'] == str(trained.step)
  assert saved_info['class_names'] == saved_info['asset_class_names'] == trained.class_names
  assert saved_info['metadata']['model'] == model
  if model == 'ngram':  # a write that fails half-way (a full disk) leaves nothing, so the retry is not refused
    target = tmp_path / 'retry' / 'model.onnx'
    write_bytes = Path.write_bytes
    def fail_on_the_model(path, data):
      if path.name.startswith('model.onnx'):
        raise OSError(28, 'No space left on device')
      return write_bytes(path, data)
    with pytest.MonkeyPatch.context() as patch:
      patch.setattr(Path, 'write_bytes', fail_on_the_model)
      with pytest.raises(ZooError, match=r'No space left on device\); free some space .*\(nothing was written\)'):
        export.export(workdir, 'onnx', target)
    assert not list(target.parent.iterdir())
    assert export.export(workdir, 'onnx', target) == [export.vocabulary_path(target), target]
  if trained.kind == 'text':
    assert onnx_info['input_name'] == 'token_ids' and onnx_info['input_type'] == 'tensor(int32)'
    assert saved_info['input_name'] == 'texts'
    vocabulary = export.vocabulary_path(onnx_path).read_text(encoding='utf-8').split('\n')
    assert vocabulary[:2] == ['', '[UNK]']  # line i is token id i: padding, out of vocabulary, then the words
    assert vocabulary[2:] == (workdir / 'vocabulary.txt').read_text(encoding='utf-8').split('\n')
  else:
    assert onnx_info['input_name'] == saved_info['input_name'] == 'images'
    assert onnx_info['input_type'] == 'tensor(uint8)'


def test_the_savedmodel_tokenizer_gives_the_python_tokenizers_ids():
  """The TensorFlow string ops in the SavedModel split and look up words as `zoo.data.tokenizer`
  does."""
  from zoo.data import tokenizer
  vocabulary = tokenizer.learn_vocabulary(TRICKY_TEXTS[:-3], 40)  # the last texts' words stay unknown
  python_tokenizer = tokenizer.Tokenizer(vocabulary, 12)
  expected = python_tokenizer(TRICKY_TEXTS)
  ids = export.tensorflow_tokenizer(python_tokenizer)(TRICKY_TEXTS).numpy()
  assert ids.dtype == np.int32 and ids.shape == (len(TRICKY_TEXTS), 12)
  np.testing.assert_array_equal(ids, expected)
  assert (expected == tokenizer.OUT_OF_VOCABULARY).any() and (expected[:, -1] > 0).any()  # both edges are tried


def _unconvertible_primitive():
  """A primitive no converter knows: what a model using an operation jax2onnx lacks looks like."""
  from jax.extend.core import Primitive
  primitive = Primitive('zoo_test_unconvertible')
  primitive.def_impl(lambda x: x)
  primitive.def_abstract_eval(lambda x: x)
  return primitive


def test_a_model_onnx_cannot_take_stops_with_one_line(tmp_path, monkeypatch):
  primitive = _unconvertible_primitive()

  monkeypatch.setattr(export, 'serving_function', lambda trained: lambda x: primitive.bind(x.astype('float32')))
  with pytest.raises(ZooError) as error:
    export.write_onnx(_FakeTrainedModel(), tmp_path / 'model.onnx')
  message = str(error.value)
  assert message.startswith('--model=custom cannot be exported to onnx') and 'zoo_test_unconvertible' in message
  assert message.endswith('export it with --format=saved_model instead') and '\n' not in message
  assert not list(tmp_path.iterdir())  # nothing written


class _FakeTrainedModel:  # the parts of a TrainedModel that write_onnx and write_saved_model read
  kind, input_shape, class_names, step = 'image', (4, 4, 1), ['a', 'b'], 1
  description = {'inputs': {'kind': 'image', 'shape': [4, 4, 1]}}
  config = type('Config', (), {'model': 'custom'})


@pytest.mark.parametrize('export_format', ['onnx', 'saved_model'])
def test_a_converter_failure_is_one_line_and_writes_nothing(export_format, tmp_path, monkeypatch):
  def broken(x):
    raise ValueError('a converter bug\nwith a second line')
  monkeypatch.setattr(export, 'serving_function', lambda trained: broken)
  write = export.write_onnx if export_format == 'onnx' else export.write_saved_model
  with pytest.raises(ZooError) as error:
    write(_FakeTrainedModel(), tmp_path / 'model')
  message = str(error.value)
  other = 'saved_model' if export_format == 'onnx' else 'onnx'
  assert message.startswith(f'--model=custom could not be exported to {export_format}: the converter failed '
                            '(ValueError: a converter bug)') and '\n' not in message
  assert f'; try --format={other}' in message
  assert not list(tmp_path.iterdir())  # nothing written, no temporary folder left


def test_export_without_the_extra_says_how_to_install_it(monkeypatch):
  monkeypatch.setitem(sys.modules, 'jax2onnx', None)  # `import jax2onnx` raises ImportError
  with pytest.raises(ZooError, match=r"jax2onnx is not installed\); pip install -e '\.\[export\]'"):
    export._converter()


def test_export_of_a_folder_that_is_no_workdir_stops_with_one_line(tmp_path):
  result = subprocess.run([sys.executable, '-m', 'experiments.export', f'--workdir={tmp_path}', '--format=saved_model'],
                          cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2'),
                          capture_output=True, text=True, timeout=300)
  assert_one_line_error(result, 'it is not a zoo workdir', 'pass the workdir of a training run')
