"""The demo server (`zoo.serving`, `experiments.serve`): its API answers what `--mode=predict` prints,
refuses bad requests in one JSON line and keeps serving, leaves the workdir untouched, answers concurrent
clients, holds hostile clients to its limits (deadlines, connections, pixels, formats, Host), and its page
classifies an uploaded image and a typed text in a real browser."""
import concurrent.futures
import contextlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import struct
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

import zoo
from conftest import ROOT, assert_one_line_error, in_ci, last_json_line, mock_data, run_experiment, train_in_process
from zoo import serving

REVIEW = 'A wonderful film: moving, funny and beautifully acted.'


def _train(workdir: Path, experiment: str, *flags: str) -> Path:
  """What `python -m experiments.<experiment>` trains, in this process: the server is the point here."""
  train_in_process(experiment, f'--workdir={workdir}', '--epochs=1', '--batch_size=16', *flags)
  return workdir


@pytest.fixture(scope='module')
def image_workdir(tmp_path_factory):
  """An MLP trained on mock CIFAR-10, evaluated (eval.json) as --mode=eval evaluates it."""
  workdir = _train(tmp_path_factory.mktemp('serve') / 'cifar', 'cifar', '--model=mlp')
  from zoo.training import loop
  with mock_data():
    loop.evaluate(workdir)
  return workdir


@pytest.fixture(scope='module')
def text_workdir(tmp_path_factory):
  """An LSTM trained on mock IMDB reviews (two classes), never evaluated: no eval.json."""
  return _train(tmp_path_factory.mktemp('serve') / 'imdb', 'imdb', '--model=lstm', '--max_length=40',
                '--vocab_size=500')


@contextlib.contextmanager
def _serving(workdir: Path, trained=None, limits: serving.Limits = serving.Limits()):
  """The server on an ephemeral port, in this process, for the duration of the block."""
  server = serving.make_server(trained or zoo.load(workdir), workdir, port=0, limits=limits)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield server.url
  finally:
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope='module')
def image_model(image_workdir):
  """One restored model for every image server of the module: compiled once."""
  return zoo.load(image_workdir)


@pytest.fixture(scope='module')
def image_url(image_workdir, image_model):
  with _serving(image_workdir, image_model) as url:
    yield url


QUICK = serving.Limits(connections=2, header_seconds=0.25, body_seconds=0.25)


@pytest.fixture(scope='module')
def quick_url(image_workdir, image_model):
  """A server with the limits of `QUICK`: deadlines of a quarter second, two connections at a time."""
  with _serving(image_workdir, image_model, QUICK) as url:
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


def test_predict_mode_names_text_that_is_not_utf8_in_one_line(text_workdir):
  result = subprocess.run([sys.executable, '-m', 'experiments.imdb', '--mode=predict', f'--workdir={text_workdir}'],
                          input='A fine film\nun film très beau\n', encoding='latin-1', cwd=ROOT, env=_env(),
                          capture_output=True, timeout=120)
  assert_one_line_error(result, "standard input is not UTF-8: line 2 has the byte b'\\xe8'", 'pass UTF-8 text')
  assert result.stdout == ''


def test_prediction_fields_name_the_top_classes():
  fields = zoo.inference.prediction_fields(['a', 'b', 'c', 'd'], np.array([0.1, 0.4, 0.1, 0.4], np.float32))
  assert fields == {'label': 'b', 'p': 0.4, 'top': [['b', 0.4], ['d', 0.4], ['a', 0.1]]}  # ties: first class
  fields = zoo.inference.prediction_fields(['neg', 'pos'], np.array([0.87654, 0.12346], np.float32))
  assert fields == {'label': 'neg', 'p_positive': 0.1235, 'top': [['neg', 0.8765], ['pos', 0.1235]]}


@pytest.mark.parametrize('body, headers, status, problem, fix', [
    (b'not an image at all', {}, 400, 'the body is not a PNG, JPEG, GIF, BMP or WebP image',
     "send an image file's bytes"),
    (b'', {}, 400, 'the body is empty', "send an image file's bytes"),
    (b'\x89PNG\r\n\x1a\n' + b'\0' * 40, {}, 400, 'image this server reads', 'in one of these formats'),
    (b'[' * 100_000 + b']' * 100_000, {}, 400, 'not a PNG, JPEG', "send an image file's bytes"),
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
                  'the body is not a PNG, JPEG, GIF, BMP or WebP image', "send an image file's bytes")


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
    (b'[' * 100_000 + b']' * 100_000, 400, 'JSON this server does not read (nested too deeply)', 'send JSON'),
    (b'{"text": "a film", "stars": ' + b'9' * 5000 + b'}', 400, 'Exceeds the limit (4300 digits)', 'send JSON'),
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
  for damaged in (b'5', b'"text"', b'[' * 100_000, b'\xff\xfe{}'):
    (tmp_path / 'eval.json').write_bytes(damaged)
    assert serving.eval_figures(tmp_path) is None, damaged
  # Only figures the page can show pass, so that /info is strict JSON (no NaN) whatever the file holds.
  (tmp_path / 'eval.json').write_text('{"accuracy": NaN, "loss": "low", "ece": Infinity, "split": 3, "step": 6}')
  assert serving.eval_figures(tmp_path) == {'step': 6}
  (tmp_path / 'eval.json').unlink()
  (tmp_path / 'eval.json').mkdir()
  assert serving.eval_figures(tmp_path) is None


def _address(url: str) -> tuple[str, int]:
  host, port = url.removeprefix('http://').rstrip('/').rsplit(':', 1)
  return host, int(port)


def _exchange(url: str, data: bytes, half_close: bool = False) -> tuple[bytes, float]:
  """Raw bytes sent as they are (the client may then end its side), and everything the server sends
  until it closes the connection, with the seconds that took."""
  with socket.create_connection(_address(url), timeout=10) as connection:
    start = time.monotonic()
    with contextlib.suppress(OSError):  # the server may have answered and closed before all was sent
      connection.sendall(data)
      if half_close:
        connection.shutdown(socket.SHUT_WR)
    return _read_to_the_end(connection), time.monotonic() - start


def _read_to_the_end(connection: socket.socket) -> bytes:
  response = b''
  while chunk := connection.recv(65536):
    response += chunk
  return response


def _assert_one_json_line(response: bytes, status: int, problem: str) -> None:
  """An HTTP response with this status and one line of JSON, {"error": "<problem>; <fix>"}."""
  head, _, body = response.partition(b'\r\n\r\n')
  assert head.split(b' ')[:2] == [b'HTTP/1.1', str(status).encode()], response[:300]
  assert body.endswith(b'\n') and body.count(b'\n') == 1, response[:300]
  message = json.loads(body)['error']
  assert '; ' in message and problem in message.split('; ')[0], message


@pytest.mark.parametrize('request_bytes, status, problem', [
    (b'GARBAGE\r\n\r\n', 400, "Bad request syntax ('GARBAGE')"),
    (b'GET / HTTP/9.9\r\nHost: localhost\r\n\r\n', 505, 'Invalid HTTP version (9.9)'),
    (b'GET /' + b'a' * 70_000 + b' HTTP/1.1\r\n\r\n', 414, 'The request line is over 65,536 bytes'),
    (b'GET / HTTP/1.1\r\n' + b'X-Many: 1\r\n' * 101 + b'\r\n', 431, 'Too many headers'),
    (b'GET / HTTP/1.1\r\nX-Long: ' + b'a' * 70_000 + b'\r\n\r\n', 431, 'Line too long'),
    (b'POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: \xb2\r\n\r\nab', 400,
     "Content-Length '\u00b2' is not a byte count"),
    (b'POST /predict HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: \xb2\r\n\r\n', 400,
     "Content-Length '\u00b2' is not a byte count"),
    (b'POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab', 400,
     "Content-Length '2, 3' is not a byte count"),
    (b'POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: ' + b'9' * 5000 + b'\r\n\r\n', 413,
     'the body is a 5,000-digit number of bytes'),
], ids=['request line', 'version', 'long request line', 'many headers', 'long header', 'length not ASCII',
        'length not ASCII, expect 100', 'two lengths', 'length of 5000 digits'])
def test_malformed_requests_get_one_json_line_too(quick_url, request_bytes, status, problem, tmp_path):
  """The standard library's own refusals included: no HTML page, no status-less answer, no 500."""
  response, _ = _exchange(quick_url, request_bytes)
  _assert_one_json_line(response, status, problem)
  assert _predict(quick_url, _png(tmp_path / 'ok.png', 1).read_bytes())['label']


def test_expect_100_continue_invites_the_body_of_a_request_it_will_read(quick_url, tmp_path):
  body = _png(tmp_path / 'ok.png', 1).read_bytes()
  with socket.create_connection(_address(quick_url), timeout=10) as connection:
    connection.sendall(b'POST /predict HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nConnection: close\r\n'
                       b'Content-Length: %d\r\n\r\n' % len(body))
    assert connection.recv(65536) == b'HTTP/1.1 100 Continue\r\n\r\n'
    connection.sendall(body)
    response = _read_to_the_end(connection)
  assert response.startswith(b'HTTP/1.1 200 ') and json.loads(response.partition(b'\r\n\r\n')[2]) == _predict(quick_url, body)
  # A request that will be refused hears so instead of an invitation to send its body.
  response, _ = _exchange(quick_url, b'POST /nowhere HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n'
                                     b'Content-Length: 5\r\n\r\n')
  _assert_one_json_line(response, 404, "no page '/nowhere' here")


@pytest.mark.parametrize('request_bytes, half_close, status, problem', [
    (b'GET /info HTTP/1.1\r\nHost: local', False, 408, "the request's headers took over 0.25 s"),
    (b'POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: 50\r\n\r\nab', False, 408,
     "2 of the body's 50 bytes came in 0.25 s"),
    (b'POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: 50\r\n\r\nab', True, 400,
     'the body ended after 2 of 50 bytes'),
], ids=['headers stall', 'body stalls', 'body ends short'])
def test_a_slow_or_short_request_is_answered_within_its_deadline(quick_url, request_bytes, half_close, status,
                                                                 problem):
  response, seconds = _exchange(quick_url, request_bytes, half_close)
  _assert_one_json_line(response, status, problem)
  assert seconds < QUICK.header_seconds + 2  # slack for a busy machine


def test_the_header_deadline_holds_for_a_client_that_sends_a_byte_at_a_time(quick_url):
  """Each byte comes well within the deadline: only a deadline for the whole headers (not a timeout
  for each read) ends the request."""
  request_bytes = b'GET /info HTTP/1.1\r\nHost: localhost\r\nX-Slow: ' + b'a' * 200
  with socket.create_connection(_address(quick_url), timeout=10) as connection:

    def trickle():
      with contextlib.suppress(OSError):
        for byte in request_bytes:
          connection.send(bytes([byte]))
          time.sleep(0.02)

    start = time.monotonic()
    threading.Thread(target=trickle, daemon=True).start()
    response = _read_to_the_end(connection)
    seconds = time.monotonic() - start
  _assert_one_json_line(response, 408, "the request's headers took over 0.25 s")
  assert seconds < QUICK.header_seconds + 2  # slack for a busy machine


def _connection_threads() -> int:
  return sum(thread.name.endswith('(process_request_thread)') for thread in threading.enumerate())


def test_idle_connections_hold_no_more_threads_than_the_limit_and_end_at_the_deadline(quick_url, tmp_path):
  body = _png(tmp_path / 'ok.png', 1).read_bytes()
  time.sleep(0.1)  # earlier connections' threads have ended
  before = _connection_threads()
  stalled = [socket.create_connection(_address(quick_url), timeout=10) for _ in range(4)]
  try:
    for connection in stalled[:2]:
      connection.sendall(b'GET /info HTTP/1.1\r\n')  # half a request; the other two send nothing
    time.sleep(0.1)
    assert _connection_threads() - before <= QUICK.connections
    start = time.monotonic()
    assert _predict(quick_url, body)['label']  # waits for a thread: the stalled ones end at their deadline
    assert time.monotonic() - start < 2 * QUICK.header_seconds + 2
    for connection in stalled[:2]:
      _assert_one_json_line(_read_to_the_end(connection), 408, "the request's headers took over")
    assert [_read_to_the_end(connection) for connection in stalled[2:]] == [b'', b'']  # closed quietly
  finally:
    for connection in stalled:
      connection.close()


def _png_header(width: int, height: int) -> bytes:
  """A PNG whose header announces width x height RGBA pixels and whose data holds a few bytes: decoding
  it would fail, so a refusal that names its size was made from the header."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
  header = struct.pack('>IIBBBBB', width, height, 8, 6, 0, 0, 0)  # 8 bits, RGBA
  return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b'')


@pytest.mark.filterwarnings('ignore::PIL.Image.DecompressionBombWarning')
def test_an_image_over_the_pixel_limit_is_refused_from_its_header(image_url):
  _assert_refused(_request(image_url, 'POST', '/predict', _png_header(13_000, 13_000)), 413,
                  'the image is 13,000 x 13,000 pixels, over the limit of 40,000,000', 'use a smaller image')
  _assert_refused(_request(image_url, 'POST', '/predict', _png_header(20_000, 20_000)), 413,
                  "Pillow's limit against decompression bombs", 'use a smaller image')


def test_images_are_decoded_one_at_a_time(image_url, tmp_path, monkeypatch):
  """However many clients send an image at once, one image's pixels are in memory."""
  from zoo.data import images
  decoding, most, lock = [0], [0], threading.Lock()
  open_image = images.open_image

  def counted(*args, **kwargs):
    with lock:
      decoding[0] += 1
      most[0] = max(most[0], decoding[0])
    try:
      time.sleep(0.02)
      return open_image(*args, **kwargs)
    finally:
      with lock:
        decoding[0] -= 1

  monkeypatch.setattr(images, 'open_image', counted)
  bodies = [_png(tmp_path / f'{i}.png', 20 + i).read_bytes() for i in range(6)]
  assert len(_concurrently(image_url, bodies)) == 6
  assert most[0] == 1


def _encoded(format_name: str) -> bytes:
  data = io.BytesIO()
  Image.fromarray(np.random.default_rng(5).integers(0, 256, (24, 20, 3), np.uint8)).save(data, format_name)
  return data.getvalue()


@pytest.mark.parametrize('format_name, status', [
    ('PNG', 200), ('JPEG', 200), ('GIF', 200), ('BMP', 200), ('WEBP', 200),
    ('TIFF', 400), ('EPS', 400), ('PPM', 400), ('ICO', 400), ('TGA', 400),
])
def test_only_the_formats_users_upload_are_decoded(image_url, format_name, status, monkeypatch):
  """Pillow reads dozens of formats, some through other programs (EPS runs Ghostscript): a request's
  bytes reach only the decoders of the formats a user uploads."""
  ghostscript = []

  def no_ghostscript(*args, **kwargs):
    ghostscript.append(args)
    raise OSError('Ghostscript was called')

  monkeypatch.setattr(EpsImagePlugin, 'Ghostscript', no_ghostscript)
  response = _request(image_url, 'POST', '/predict', _encoded(format_name))
  if status == 200:
    assert response[0] == 200, response
  else:
    _assert_refused(response, 400, 'the body is not a PNG, JPEG, GIF, BMP or WebP image', 'in one of these formats')
  assert ghostscript == []


@pytest.mark.parametrize('headers, status', [
    ({'Host': 'localhost:8000'}, 200),
    ({'Host': '127.0.0.1'}, 200),
    ({'Host': '[::1]:8000'}, 200),
    ({'Host': 'evil.example:8000'}, 403),  # a name that resolves to 127.0.0.1: DNS rebinding
    ({'Host': 'localhost.evil.example'}, 403),
    ({'Host': '127.0.0.1.nip.io'}, 403),
    ({'Host': ''}, 403),
    ({'Host': 'localhost', 'Origin': 'http://evil.example'}, 403),  # another site's page
    ({'Host': 'localhost', 'Origin': 'null'}, 403),
    ({'Host': 'localhost:8000', 'Origin': 'http://localhost:8000'}, 200),
])
def test_a_loopback_server_answers_requests_for_this_machine_only(image_url, headers, status, tmp_path):
  body = _png(tmp_path / 'ok.png', 1).read_bytes()
  for method, path, data in (('GET', '/info', None), ('POST', '/predict', body)):
    response = _request(image_url, method, path, data, headers)
    if status == 200:
      assert response[0] == 200, response
    else:
      _assert_refused(response, 403, 'this server' if 'Origin' not in headers else 'may not use this server',
                      'open http://127.0.0.1:')


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


def test_the_server_listens_on_localhost_unless_told(image_workdir, image_model):
  server = serving.make_server(image_model, image_workdir, port=0)
  try:
    assert server.server_address[0] == '127.0.0.1' and server.url.startswith('http://127.0.0.1:')
  finally:
    server.server_close()
  with pytest.raises(zoo.errors.ZooError, match='cannot listen on port 70000 .*; pass a --port from 1 to 65535'):
    serving.make_server(image_model, image_workdir, port=70000)


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
  assert_one_line_error(missing, 'nowhere is neither a workdir, a .zoo file, a URL nor a shipped model', 'pass one (shipped models:')
  beyond = subprocess.run(_serve_command(f'--workdir={image_workdir}', '--port=70000'), cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120)
  assert_one_line_error(beyond, '--port=70000 is not a port number', 'pass one from 1 to 65535')
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
  assert page.get_attribute('#file', 'accept') == 'image/png,image/jpeg,image/gif,image/bmp,image/webp'
  assert page.inner_text('#image-hint').startswith('PNG, JPEG, GIF, BMP or WebP, up to 40 megapixels;')
  page.set_input_files('#file', str(picture))
  page.wait_for_selector('#result:not([hidden])', timeout=10_000)
  assert page.inner_text('#label') == expected['label']
  bars = page.query_selector_all('.bar-row')
  assert [bar.query_selector('.name').inner_text() for bar in bars] == [name for name, _ in expected['top']]
  assert page.is_visible('#preview') and page.is_hidden('#error')
  page.screenshot(path=str(tmp_path / 'image_page.png'))
  page.set_input_files('#file', {'name': 'notes.txt', 'mimeType': 'text/plain', 'buffer': b'not an image'})
  page.wait_for_selector('#error:not([hidden])')
  assert 'not a PNG, JPEG, GIF, BMP or WebP image' in page.inner_text('#error')


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
