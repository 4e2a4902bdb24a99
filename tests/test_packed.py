"""Packed models (`zoo/packed.py`): a workdir as one `.zoo` file, loaded from a path or a URL served
on 127.0.0.1, with the same predictions; and every way a file or a download can be wrong."""
import functools
import hashlib
import http.server
import json
import os
import shutil
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

import zoo
from conftest import assert_one_line_error, last_json_line, run_experiment
from test_datasets import image_folder
from zoo import packed
from zoo.config import Config
from zoo.errors import ZooError
from zoo.training import loop


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A small CNN trained in-process on a folder of images: (workdir, photos)."""
  root = tmp_path_factory.mktemp('packed')
  photos = image_folder(root / 'photos')
  config = Config(dataset='', image_folder=str(photos), model='simple_cnn', epochs=1, batch_size=6, eval_batch_size=6,
                  optimizer='sgd', learning_rate=0.05, tensorboard=False, split_cache='')
  loop.train_and_evaluate(config, root / 'w')
  loop.evaluate(root / 'w')
  return root / 'w', photos


@pytest.fixture(scope='module')
def archive(trained, tmp_path_factory):
  return packed.pack(trained[0], tmp_path_factory.mktemp('zoo') / 'model.zoo')


def _images(photos: Path) -> list[Path]:
  return sorted((photos / 'test').rglob('*.*'))


@pytest.fixture
def server(tmp_path):
  """An HTTP server on 127.0.0.1 over `tmp_path/site`: (base URL, folder); it stops after the test."""
  site = tmp_path / 'site'
  site.mkdir()
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
  handler.log_message = lambda *args: None
  httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield f'http://127.0.0.1:{httpd.server_address[1]}', site, httpd
  httpd.shutdown()
  httpd.server_close()


def _cache() -> Path:
  return Path(os.environ['XDG_CACHE_HOME']) / 'zoo' / 'models'


def test_a_packed_file_predicts_what_its_workdir_predicts(trained, archive):
  workdir, photos = trained
  expected = zoo.load(workdir).predict(_images(photos))
  loaded = zoo.load(archive)
  np.testing.assert_array_equal(loaded.predict(_images(photos)), expected)
  assert loaded.class_names == ['cat', 'dog', 'ship'] and loaded.step == zoo.load(workdir).step
  with zipfile.ZipFile(archive) as opened:
    names = set(opened.namelist())
  assert names == {'config.json', 'dataset.json', 'eval.json', 'weights.safetensors', 'manifest.json'}


def test_float16_halves_the_weights_and_keeps_the_predictions_close(trained, tmp_path):
  workdir, photos = trained
  half = packed.pack(workdir, tmp_path / 'half.zoo', dtype='float16')
  full = packed.pack(workdir, tmp_path / 'full.zoo')
  assert half.stat().st_size < 0.6 * full.stat().st_size
  expected, found = zoo.load(workdir).predict(_images(photos)), zoo.load(half).predict(_images(photos))
  np.testing.assert_allclose(found, expected, atol=2e-3)
  assert (found.argmax(1) == expected.argmax(1)).all()


def test_a_url_is_downloaded_once_and_loads_from_the_cache_with_the_server_gone(trained, archive, server):
  workdir, photos = trained
  base, site, httpd = server
  shutil.copy(archive, site / 'model.zoo')
  digest = hashlib.sha256(archive.read_bytes()).hexdigest()
  url = f'{base}/model.zoo#sha256={digest}'
  expected = zoo.load(workdir).predict(_images(photos))
  np.testing.assert_array_equal(zoo.load(url).predict(_images(photos)), expected)
  httpd.shutdown()  # the network is gone: the second load is the cache's
  np.testing.assert_array_equal(zoo.load(url).predict(_images(photos)), expected)
  np.testing.assert_array_equal(zoo.load(f'file://{archive}').predict(_images(photos)), expected)


@pytest.mark.parametrize('case', ['wrong_hash', 'missing', 'not_a_zip', 'truncated'])
def test_a_bad_download_is_one_error_and_leaves_nothing_in_the_cache(archive, server, case):
  base, site, _ = server
  data = archive.read_bytes()
  (site / 'model.zoo').write_bytes({'not_a_zip': b'<html>not found</html>', 'truncated': data[:len(data) // 2]}
                                   .get(case, data))
  url = f'{base}/{"gone.zoo" if case == "missing" else "model.zoo"}'
  if case == 'wrong_hash':
    url += '#sha256=' + '0' * 64
  before = set(_cache().rglob('*')) if _cache().exists() else set()
  with pytest.raises(ZooError) as error:
    zoo.load(url)
  message = str(error.value)
  assert '\n' not in message and ';' in message
  assert {'wrong_hash': 'hash', 'missing': '404', 'not_a_zip': 'not a zoo archive',
          'truncated': 'not a zoo archive'}[case] in message
  after = set(_cache().rglob('*')) if _cache().exists() else set()
  assert {p for p in after - before if p.is_file()} == set()


def test_no_network_is_one_error_naming_the_fix():
  with pytest.raises(ZooError, match=r'http://127.0.0.1:9/model.zoo could not be reached .*; check the network'):
    zoo.load('http://127.0.0.1:9/model.zoo')


@pytest.mark.parametrize('member', ['../evil.txt', '/etc/evil', 'sub/evil.txt'])
def test_an_archive_member_outside_its_folder_is_refused(archive, tmp_path, member):
  bad = tmp_path / 'bad.zoo'
  with zipfile.ZipFile(archive) as good, zipfile.ZipFile(bad, 'w') as out:
    for name in good.namelist():
      out.writestr(name, good.read(name))
    out.writestr(member, b'outside')
  with pytest.raises(ZooError, match=f'holds the member {member!r}, outside its folder'):
    zoo.load(bad)
  assert not (tmp_path / 'evil.txt').exists() and not Path('/etc/evil').exists()


def test_a_damaged_file_of_a_packed_folder_is_named(archive, tmp_path):
  folder = packed.unpack(archive)
  copy = tmp_path / 'copy'
  shutil.copytree(folder, copy)
  weights = copy / 'weights.safetensors'
  weights.write_bytes(weights.read_bytes()[:-8] + b'\0' * 8)
  with pytest.raises(ZooError, match=f'{weights} is damaged .*; reinstall or download the model again'):
    zoo.load(copy)


def test_a_packed_file_is_a_fine_tuning_source(trained, archive, tmp_path):
  workdir, photos = trained
  config = Config(dataset='', image_folder=str(photos), model='simple_cnn', epochs=1, batch_size=6, eval_batch_size=6,
                  optimizer='sgd', learning_rate=0.05, tensorboard=False, split_cache='', init_from=str(archive))
  history = loop.train_and_evaluate(config, tmp_path / 'tuned')
  assert [entry['epoch'] for entry in history] == [1]
  record = json.loads((tmp_path / 'tuned' / 'init_from.json').read_text())
  assert record['step'] == zoo.load(workdir).step and packed.is_packed(record['path'])


def test_an_unknown_name_lists_the_shipped_models():
  with pytest.raises(ZooError, match=r'nosuch/model is neither a workdir, a .zoo file, a URL nor a shipped model'):
    zoo.load('nosuch/model')


def test_the_command_line_packs_predicts_and_evaluates_a_packed_file(trained, tmp_path):
  workdir, photos = trained
  result = run_experiment('export', f'--workdir={workdir}', '--format=zoo', f'--output={tmp_path / "m.zoo"}',
                          mock=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert last_json_line(result.stdout)['written'] == [str(tmp_path / 'm.zoo')]
  image = _images(photos)[0]
  predicted = run_experiment('images', '--mode=predict', f'--workdir={tmp_path / "m.zoo"}', f'--image={image}',
                             mock=False)
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  expected = zoo.load(workdir).predict([image])[0]
  assert last_json_line(predicted.stdout)['label'] == ['cat', 'dog', 'ship'][int(expected.argmax())]
  assert_one_line_error(run_experiment('export', f'--workdir={workdir}', '--format=zoo',
                                       f'--output={tmp_path / "m.zoo"}', mock=False),
                        'm.zoo exists', 'pass another --output or remove it')
  evaluated = run_experiment('images', '--mode=eval', f'--workdir={tmp_path / "m.zoo"}', mock=False, cwd=tmp_path)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert json.loads((tmp_path / 'eval_photos_simple_cnn' / 'eval.json').read_text())['accuracy'] == pytest.approx(
      json.loads((workdir / 'eval.json').read_text())['accuracy'])


SHIPPED = sorted(p.parent for p in packed.SHIPPED.glob('*/*/manifest.json'))


@pytest.mark.parametrize('folder', SHIPPED, ids=lambda p: f'{p.parent.name}/{p.name}')
def test_each_shipped_models_card_gives_the_figures_of_its_stored_evaluation(folder):
  packed.read_manifest(folder)  # every file as it was shipped
  card, evaluation = (folder / 'MODEL_CARD.md').read_text(), json.loads((folder / 'eval.json').read_text())
  assert f'- accuracy: {evaluation["accuracy"]:.4f}' in card
  assert f'- macro F1: {evaluation["macro_f1"]:.4f}' in card
  assert f'- expected calibration error (15 bins): {evaluation["ece"]:.4f}' in card
  for name, row in evaluation['per_class'].items():
    assert f'| {name} | {row["precision"]:.4f} | {row["recall"]:.4f} | {row["f1"]:.4f} | {row["support"]} |' in card
  assert f'{evaluation["num_examples"]} examples, step {evaluation["step"]}' in card
  name = f'{folder.parent.name}/{folder.name}'
  listed = {model.name: model for model in zoo.list_trained()}[name]
  assert listed.accuracy == evaluation['accuracy'] and listed.classes == evaluation['class_names']


def test_the_shipped_models_fit_in_40_megabytes_and_load_by_name():
  assert SHIPPED, 'no model is shipped inside the package'
  total = sum(p.stat().st_size for folder in SHIPPED for p in folder.iterdir())
  assert total <= 40 * 2 ** 20
  for folder in SHIPPED:
    model = zoo.load(f'{folder.parent.name}/{folder.name}')
    probabilities = model.predict(['a wonderful, moving film'] if model.kind == 'text'
                                  else np.zeros((1, *model.input_shape), np.uint8))
    assert probabilities.shape == (1, len(model.class_names))
    np.testing.assert_allclose(probabilities.sum(1), 1, rtol=1e-5)


def test_to_nnx_gives_the_linen_models_logits(trained):
  loaded = zoo.load(trained[0])
  inputs = loaded.preprocess(_images(trained[1]))
  module = loaded.to_nnx()
  np.testing.assert_allclose(module(inputs, train=False), loaded.model.apply(loaded.variables, inputs, train=False),
                             rtol=1e-6, atol=1e-6)


def test_the_nnx_training_snippet_of_the_docs_runs_and_lowers_the_loss():
  """docs/trained.md's NNX example, as written there, on the shipped text model."""
  text = (Path(__file__).resolve().parent.parent / 'docs' / 'trained.md').read_text()
  code = text.split('## In Flax NNX code')[1].split('```python')[1].split('```')[0]
  scope: dict = {}
  exec(code, scope)  # pylint: disable=exec-used
  losses = [float(scope['step'](scope['module'], scope['optimizer'], scope['x'], scope['y'])) for _ in range(3)]
  assert losses[2] < losses[0]


def test_the_listing_command_prints_every_shipped_model():
  result = run_experiment('list_trained', '--json', mock=False)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(line) for line in result.stdout.splitlines()]
  assert [row['name'] for row in rows] == [f'{f.parent.name}/{f.name}' for f in SHIPPED]


def test_an_evaluation_goes_to_the_folder_named_and_leaves_the_workdir_alone(trained, tmp_path):
  workdir, _ = trained
  before = (workdir / 'eval.json').read_bytes()
  result = loop.evaluate(workdir, output=tmp_path / 'elsewhere')
  assert json.loads((tmp_path / 'elsewhere' / 'eval.json').read_text())['accuracy'] == result['accuracy']
  assert (tmp_path / 'elsewhere' / 'report' / 'index.html').is_file()
  assert (workdir / 'eval.json').read_bytes() == before
