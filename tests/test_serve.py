"""The demo server (`zoo.serving`, `experiments.serve`): its API answers what `--mode=predict` prints,
refuses bad requests in one JSON line and keeps serving, leaves the workdir untouched, answers concurrent
clients, and its page classifies an uploaded image and a typed text in a real browser."""
import concurrent.futures
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zoo
from conftest import ROOT, assert_one_line_error, in_ci, last_json_line, run_experiment
from zoo import serving

REVIEW = 'A wonderful film: moving, funny and beautifully acted.'


def _train(workdir: Path, experiment: str, *flags: str) -> Path:
  result = run_experiment(experiment, f'--workdir={workdir}', '--epochs=1', '--batch_size=16', *flags)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


@pytest.fixture(scope='module')
def image_workdir(tmp_path_factory):
  """An MLP trained on mock CIFAR-10, evaluated (eval.json) as a user would."""
  workdir = _train(tmp_path_factory.mktemp('serve') / 'cifar', 'cifar', '--model=mlp')
  evaluation = run_experiment('cifar', '--mode=eval', f'--workdir={workdir}')
  assert evaluation.returncode == 0, evaluation.stderr[-3000:]
  return workdir


@pytest.fixture(scope='module')
def text_workdir(tmp_path_factory):
  """An LSTM trained on mock IMDB reviews (two classes), never evaluated: no eval.json."""
  return _train(tmp_path_factory.mktemp('serve') / 'imdb', 'imdb', '--model=lstm', '--max_length=40',
                '--vocab_size=500')


@contextlib.contextmanager
def _serving(workdir: Path):
  """The server on an ephemeral port, in this process, for the duration of the block."""
  server = serving.make_server(zoo.load(workdir), workdir, port=0)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield server.url
  finally:
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope='module')
def image_url(image_workdir):
  with _serving(image_workdir) as url:
    yield url


@pytest.fixture(scope='module')
def text_url(text_workdir):
  with _serving(text_workdir) as url:
    yield url


def _request(url: str, method: str, path: str, body: bytes | None = None,
             headers: dict | None = None) -> tuple[int, dict, bytes]:
  """Status, headers and body of one request sent as given (no path normalisation)."""
  host, port = url.removeprefix('http://').rstrip('/').rsplit(':', 1)
  connection = http.client.HTTPConnection(host, int(port), timeout=60)
  try:
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), response.read()
  finally:
    connection.close()


def _predict(url: str, body: bytes, headers: dict | None = None) -> dict:
  status, _, data = _request(url, 'POST', '/predict', body, headers)
  assert status == 200, data
  return json.loads(data)


def _text_body(text: str) -> bytes:
  return json.dumps({'text': text}).encode()


def _assert_refused(response, status: int, problem: str, fix: str) -> None:
  """A 4xx with one line of JSON, {"error": "<problem>; <fix>"}."""
  code, _, data = response
  assert code == status, (code, data)
  assert data.endswith(b'\n') and data.count(b'\n') == 1, data
  message = json.loads(data)['error']
  assert '; ' in message and problem in message.split('; ')[0], message
  assert fix in message.split('; ', 1)[1], message


def _photo(path: Path, seed: int = 0) -> Path:
  """A JPEG of another size than the training images, stored sideways with an EXIF rotation."""
  image = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 64, 3), np.uint8))
  exif = Image.Exif()
  exif[0x0112] = 6  # Orientation: rotate 90 degrees to display
  image.save(path, exif=exif)
  return path


def _png(path: Path, seed: int) -> Path:
  Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 30, 4), np.uint8), 'RGBA').save(path)
  return path


def test_an_image_gets_the_fields_predict_mode_prints_for_its_file(image_url, image_workdir, tmp_path):
  photo = _photo(tmp_path / 'photo.jpg')
  printed = run_experiment('cifar', '--mode=predict', f'--workdir={image_workdir}', f'--image={photo}')
  assert printed.returncode == 0, printed.stderr[-3000:]
  line = last_json_line(printed.stdout)
  answer = _predict(image_url, photo.read_bytes(), {'Content-Type': 'image/jpeg'})
  assert answer == {key: value for key, value in line.items() if key != 'image'}
  assert set(answer) == {'label', 'p', 'top'} and len(answer['top']) == 3
  # The EXIF rotation is applied as for a file: the upright pixels give the same answer.
  upright = Image.open(photo).transpose(Image.Transpose.ROTATE_270)  # what orientation 6 means
  assert upright.size == (48, 64)
  trained = zoo.load(image_workdir)
  assert answer == zoo.inference.prediction_fields(trained.class_names, trained.predict(upright)[0])


def test_a_text_gets_the_fields_predict_mode_prints_for_it(text_url, text_workdir):
  printed = run_experiment('imdb', '--mode=predict', f'--workdir={text_workdir}', f'--text={REVIEW}')
  assert printed.returncode == 0, printed.stderr[-3000:]
  line = last_json_line(printed.stdout)
  answer = _predict(text_url, _text_body(REVIEW), {'Content-Type': 'application/json'})
  assert answer == line
  assert set(answer) == {'text', 'label', 'p_positive', 'top'} and answer['text'] == REVIEW
  assert [name for name, _ in answer['top']] == sorted(['neg', 'pos'], key=lambda n: n != answer['label'])
  assert dict(answer['top'])['pos'] == answer['p_positive']


def test_prediction_fields_name_the_top_classes():
  fields = zoo.inference.prediction_fields(['a', 'b', 'c', 'd'], np.array([0.1, 0.4, 0.1, 0.4], np.float32))
  assert fields == {'label': 'b', 'p': 0.4, 'top': [['b', 0.4], ['d', 0.4], ['a', 0.1]]}  # ties: first class
  fields = zoo.inference.prediction_fields(['neg', 'pos'], np.array([0.87654, 0.12346], np.float32))
  assert fields == {'label': 'neg', 'p_positive': 0.1235, 'top': [['neg', 0.8765], ['pos', 0.1235]]}


@pytest.mark.parametrize('body, headers, status, problem, fix', [
    (b'not an image at all', {}, 400, 'the body is not an image Pillow reads', "send an image file's bytes"),
    (b'', {}, 400, 'the body is empty', "send an image file's bytes"),
    (b'\x89PNG\r\n\x1a\n' + b'\0' * 40, {}, 400, 'not an image Pillow reads', 'PNG, JPEG'),
    (_text_body(REVIEW), {'Content-Type': 'application/json'}, 415, 'this is an image model (cifar10)',
     "send an image file's bytes"),
    (b'x', {'Content-Length': 'many'}, 400, "Content-Length 'many' is not a byte count", 'send the body with its length'),
])
def test_an_image_model_refuses_bad_bodies_and_keeps_serving(image_url, body, headers, status, problem, fix,
                                                             tmp_path):
  _assert_refused(_request(image_url, 'POST', '/predict', body, headers), status, problem, fix)
  assert _predict(image_url, _png(tmp_path / 'ok.png', 1).read_bytes())['label']


def test_a_truncated_image_is_refused(image_url, tmp_path):
  data = _png(tmp_path / 'cut.png', 2).read_bytes()
  _assert_refused(_request(image_url, 'POST', '/predict', data[:len(data) // 2]), 400,
                  'the body is not an image Pillow reads', "send an image file's bytes")


def test_an_oversized_body_is_refused_from_its_length_before_it_is_read(image_url):
  host, port = image_url.removeprefix('http://').rstrip('/').rsplit(':', 1)
  connection = http.client.HTTPConnection(host, int(port), timeout=30)
  try:
    connection.putrequest('POST', '/predict')
    connection.putheader('Content-Length', str(serving.MAX_BODY_BYTES + 1))
    connection.endheaders()  # not a byte of the body is sent: the answer cannot wait for it
    response = connection.getresponse()
    _assert_refused((response.status, {}, response.read()), 413, 'over the 10,485,760-byte limit',
                    'send a smaller file')
    assert response.getheader('Connection') == 'close'
  finally:
    connection.close()
  # curl's way: "Expect: 100-continue" is answered with the 413 instead of an invitation to send.
  connection = http.client.HTTPConnection(host, int(port), timeout=30)
  try:
    connection.putrequest('POST', '/predict')
    connection.putheader('Content-Length', str(20 * 2**20))
    connection.putheader('Expect', '100-continue')
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413, response.read()
  finally:
    connection.close()


@pytest.mark.parametrize('body, status, problem, fix', [
    (_text_body(''), 400, 'the text is empty', 'send JSON {"text": "..."}'),
    (_text_body('  \n '), 400, 'the text is empty', 'with the text to classify'),
    (b'', 400, 'the body is empty', 'send JSON {"text": "..."}'),
    (b'{"text": "caf\xe9"}', 400, 'the body is not UTF-8', 'encoded as UTF-8'),
    (b'just words, no JSON', 400, 'the body is not JSON', 'send JSON {"text": "..."}'),
    (b'{"review": "a film"}', 400, 'the JSON has no "text" string', 'send JSON {"text": "..."}'),
    (b'{"text": 3}', 400, 'the JSON has no "text" string', 'send JSON {"text": "..."}'),
    (b'["a film"]', 400, 'the JSON has no "text" string', 'send JSON {"text": "..."}'),
])
def test_a_text_model_refuses_bad_bodies_and_keeps_serving(text_url, body, status, problem, fix):
  _assert_refused(_request(text_url, 'POST', '/predict', body), status, problem, fix)
  assert _predict(text_url, _text_body(REVIEW))['text'] == REVIEW


def test_a_text_model_refuses_an_image(text_url, tmp_path):
  _assert_refused(_request(text_url, 'POST', '/predict', _png(tmp_path / 'x.png', 3).read_bytes()), 415,
                  'the body is an image, but this is a text model (imdb_reviews)', 'send JSON {"text": "..."}')


@pytest.mark.parametrize('method, path, status, allow', [
    ('GET', '/../config.json', 404, None),
    ('GET', '/config.json', 404, None),
    ('GET', '/eval.json', 404, None),
    ('GET', '/checkpoints/6', 404, None),
    ('GET', '/%2e%2e/config.json', 404, None),
    ('GET', '//etc/passwd', 404, None),
    ('POST', '/predict/', 404, None),
    ('GET', '/predict', 405, 'POST'),
    ('PUT', '/predict', 405, 'POST'),
    ('DELETE', '/', 405, 'GET, HEAD'),
    ('POST', '/', 405, 'GET, HEAD'),
    ('BREW', '/info', 405, 'GET, HEAD'),
])
def test_nothing_but_the_page_its_description_and_the_api_is_served(image_url, method, path, status, allow):
  code, headers, data = _request(image_url, method, path)
  assert code == status, (code, data)
  assert data.count(b'\n') == 1 and set(json.loads(data)) == {'error'}  # nothing of the workdir is sent
  assert headers.get('Allow') == allow


def test_the_page_is_self_contained_and_the_description_reads_eval_json(image_url, image_workdir):
  status, headers, page = _request(image_url, 'GET', '/')
  assert status == 200 and headers['Content-Type'].startswith('text/html')
  assert b'<script>' in page and b'id="file"' in page
  assert not re.search(rb'(src|href)\s*=\s*["\']?(https?:)?//', page)  # no CDN, fonts or scripts from elsewhere
  assert not re.search(rb'@import|url\(\s*["\']?https?:', page)
  assert _request(image_url, 'HEAD', '/')[2] == b''
  info = json.loads(_request(image_url, 'GET', '/info')[2])
  recorded = json.loads((image_workdir / 'eval.json').read_text())
  assert info['model'] == 'mlp' and info['dataset'] == 'cifar10' and info['kind'] == 'image'
  assert info['num_classes'] == 10 == len(info['class_names']) and info['step'] == recorded['step']
  assert info['eval'] == {key: recorded[key] for key in serving.EVAL_FIGURES if key in recorded}
  assert {'accuracy', 'top5_accuracy', 'macro_f1', 'loss', 'ece', 'split', 'step'} <= set(info['eval'])


def test_eval_figures_show_what_eval_json_has(tmp_path):
  assert serving.eval_figures(tmp_path) is None
  report = {'split': 'test', 'step': 6, 'num_examples': 96, 'accuracy': 0.5, 'loss': 1.25, 'dataset': 'cifar10',
            'model': 'mlp', 'class_names': ['a', 'b'], 'confusion': [[1, 0], [0, 1]], 'per_class': {},
            'macro_f1': 0.4, 'top5_accuracy': 0.9, 'ece': 0.05}
  (tmp_path / 'eval.json').write_text(json.dumps(report))
  assert serving.eval_figures(tmp_path) == {'accuracy': 0.5, 'top5_accuracy': 0.9, 'macro_f1': 0.4, 'loss': 1.25,
                                            'ece': 0.05, 'split': 'test', 'step': 6, 'num_examples': 96}
  (tmp_path / 'eval.json').write_text('{"accuracy": 0.')  # damaged: the page shows no figures
  assert serving.eval_figures(tmp_path) is None


def _concurrently(url: str, bodies: list[bytes]) -> list[dict]:
  """All bodies POSTed at once, one client thread each, released together."""
  start = threading.Barrier(len(bodies))

  def client(body):
    start.wait()
    return _predict(url, body)

  with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
    return list(pool.map(client, bodies))


def test_eight_clients_at_once_each_get_their_own_answer(image_url, text_url, tmp_path):
  images = [_png(tmp_path / f'{i}.png', 10 + i).read_bytes() for i in range(8)]
  # Other words (of the mock vocabulary) and lengths: other answers, so that a mix-up would show.
  texts = [_text_body(' '.join([word] * (3 + 4 * i))) for i, word in enumerate('abdefghi')]
  for url, bodies in ((image_url, images), (text_url, texts)):
    alone = [_predict(url, body) for body in bodies]
    assert len({json.dumps(answer['top']) for answer in alone}) == 8
    for _ in range(3):
      assert _concurrently(url, bodies) == alone


def _snapshot(folder: Path) -> dict:
  return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
          for path in sorted(folder.rglob('*'))}


def test_a_session_of_requests_writes_nothing_into_the_workdir(text_workdir, image_workdir, tmp_path):
  for workdir, good in ((text_workdir, _text_body(REVIEW)), (image_workdir, _photo(tmp_path / 'p.jpg').read_bytes())):
    before = _snapshot(workdir)
    with _serving(workdir) as url:
      for method, path, body in [('GET', '/', None), ('GET', '/info', None), ('POST', '/predict', good),
                                 ('POST', '/predict', b'junk'), ('POST', '/predict', b''), ('PUT', '/x', b'x'),
                                 ('GET', '/../config.json', None)]:
        _request(url, method, path, body)
    assert _snapshot(workdir) == before


def test_the_server_listens_on_localhost_unless_told(image_workdir):
  server = serving.make_server(zoo.load(image_workdir), image_workdir, port=0)
  try:
    assert server.server_address[0] == '127.0.0.1' and server.url.startswith('http://127.0.0.1:')
  finally:
    server.server_close()


def _serve_command(*flags: str) -> list[str]:
  return [sys.executable, '-m', 'experiments.serve', *flags]


def _env() -> dict:
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')
  env.pop('XLA_FLAGS', None)
  return env


def test_the_command_prints_its_url_serves_and_stops_cleanly_on_sigterm(image_workdir, tmp_path):
  process = subprocess.Popen(_serve_command(f'--workdir={image_workdir}', '--port=0', '--accelerator=cpu'),
                             cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    line = process.stdout.readline()  # printed once the model is loaded and warmed up
    match = re.search(r'http://127\.0\.0\.1:\d+/', line)
    assert match, (line, process.stderr.read() if process.poll() is not None else '')
    answer = _predict(match.group(0), _photo(tmp_path / 'p.jpg').read_bytes())
    assert answer['label'] in zoo.load(image_workdir).class_names
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert 'Traceback' not in process.stderr.read()
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()


def test_the_command_names_a_missing_workdir_and_a_taken_port(image_workdir, tmp_path):
  missing = subprocess.run(_serve_command(f'--workdir={tmp_path / "nowhere"}'), cwd=ROOT, env=_env(),
                           capture_output=True, text=True, timeout=120)
  assert_one_line_error(missing, 'nowhere does not exist', 'pass the workdir of a training run')
  with socket.socket() as taken:
    taken.bind(('127.0.0.1', 0))
    taken.listen()
    port = taken.getsockname()[1]
    result = subprocess.run(_serve_command(f'--workdir={image_workdir}', f'--port={port}'), cwd=ROOT, env=_env(),
                            capture_output=True, text=True, timeout=120)
  assert_one_line_error(result, f'port {port} on 127.0.0.1 is in use', 'pass another --port')


def _browser():
  """Headless Chromium (Debian's package) through Playwright; a skip without one, a failure in CI."""
  executable = shutil.which('chromium') or shutil.which('chromium-browser')
  try:
    from playwright.sync_api import sync_playwright
  except ImportError:
    sync_playwright = None
  missing = [what for what, found in (('chromium (apt-get install chromium)', executable),
                                      ('playwright (pip install -e ".[test]")', sync_playwright)) if not found]
  if missing:
    message = f'the browser test needs {" and ".join(missing)}'
    if in_ci():
      pytest.fail(f'{message}: CI runs it instead of skipping it')
    pytest.skip(message)
  return sync_playwright, executable


@pytest.fixture(scope='module')
def page():
  sync_playwright, executable = _browser()
  with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=executable, headless=True)
    try:
      yield browser.new_page(viewport={'width': 1000, 'height': 640})
    finally:
      browser.close()


def test_the_page_classifies_an_uploaded_image_in_a_browser(page, image_url, image_workdir, tmp_path):
  picture = _png(tmp_path / 'upload.png', 4)
  expected = _predict(image_url, picture.read_bytes())
  page.goto(image_url)
  page.wait_for_selector('#figures dd')  # the description and eval.json's figures have arrived
  assert 'cifar10' in page.inner_text('#facts')
  assert {'Accuracy', 'Top-5 accuracy', 'Macro F1', 'Calibration error'} <= set(page.inner_text('#figures').splitlines())
  page.set_input_files('#file', str(picture))
  page.wait_for_selector('#result:not([hidden])', timeout=10_000)
  assert page.inner_text('#label') == expected['label']
  bars = page.query_selector_all('.bar-row')
  assert [bar.query_selector('.name').inner_text() for bar in bars] == [name for name, _ in expected['top']]
  assert page.is_visible('#preview') and page.is_hidden('#error')
  page.screenshot(path=str(tmp_path / 'image_page.png'))
  page.set_input_files('#file', {'name': 'notes.txt', 'mimeType': 'text/plain', 'buffer': b'not an image'})
  page.wait_for_selector('#error:not([hidden])')
  assert 'not an image Pillow reads' in page.inner_text('#error')


def test_the_page_classifies_a_typed_review_in_a_browser(page, text_url, tmp_path):
  expected = _predict(text_url, _text_body(REVIEW))
  page.goto(text_url)
  page.wait_for_selector('#text-input:not([hidden])')
  assert page.is_visible('#no-eval') and page.is_hidden('#image-input')
  page.fill('#text', REVIEW)
  page.click('#classify')
  page.wait_for_selector('#result:not([hidden])', timeout=10_000)
  assert page.inner_text('#label') == expected['label']
  assert f'{100 * expected["top"][0][1]:.1f} %' in page.inner_text('#summary')
  page.screenshot(path=str(tmp_path / 'text_page.png'))
