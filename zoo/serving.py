"""The demo page and its API: a local web server around a trained model (`python -m experiments.serve`).

`make_server(trained, workdir, host, port)` returns a `ThreadingHTTPServer` (Python's standard library:
a page and one POST endpoint need nothing more) that answers

  GET  /         the page (zoo/demo.html: HTML, CSS and JS in one file, nothing from the internet)
  GET  /info     the model, its dataset and classes, and the figures of `<workdir>/eval.json`
  POST /predict  an image file's bytes (image models) or {"text": "..."} (text models) -> the fields of
                 the line `--mode=predict` prints for that input (`zoo.inference.prediction_fields`)

and nothing else: no file is served by path, and the workdir is only read. Bad requests get a 4xx
status with one line of JSON, {"error": "<problem>; <fix>"}, and the server keeps serving.
"""
import errno
import io
import json
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from zoo import workdir as workdir_lib
from zoo.errors import ZooError
from zoo.inference import TrainedModel, prediction_fields, read_image

log = logging.getLogger('zoo')

MAX_BODY_BYTES = 10 * 2**20  # a photo fits; the body is held in memory while it is decoded
PAGE_FILE = 'demo.html'
# eval.json keys the page shows, when present (older workdirs have only some of them).
EVAL_FIGURES = ('accuracy', 'top5_accuracy', 'macro_f1', 'loss', 'ece', 'split', 'step', 'num_examples')
# Path -> the methods it answers; any other path is 404, any other method 405.
ROUTES = {'/': ('GET', 'HEAD'), '/info': ('GET', 'HEAD'), '/predict': ('POST',)}


class RequestError(Exception):
  """A request the server cannot answer: its HTTP status and the one-line `<problem>; <fix>`."""

  def __init__(self, status: HTTPStatus, message: str):
    super().__init__(message)
    self.status = status


def eval_figures(workdir: Path) -> dict | None:
  """The figures of the workdir's eval.json that the page shows, or None when there is none yet."""
  try:
    report = workdir_lib.read_eval(workdir)
  except ZooError as e:  # damaged: the page shows no figures instead of failing
    log.warning('%s', e)
    return None
  return None if report is None else {key: report[key] for key in EVAL_FIGURES if key in report}


def model_summary(trained: TrainedModel, workdir: Path) -> dict:
  """What the page shows beside the predictions; eval.json is read on each call, so a `--mode=eval`
  run while the server is up shows on the next page load."""
  description = trained.description
  if trained.kind == 'image':
    height, width, channels = trained.input_shape
    inputs = f'{width}x{height} {"RGB" if channels == 3 else "grayscale"} images'
  else:
    inputs = f'texts, first {description["inputs"]["max_length"]} words'
  return {'model': trained.config.model, 'dataset': description.get('dataset') or trained.config.data_name,
          'kind': trained.kind, 'num_classes': len(trained.class_names), 'class_names': trained.class_names,
          'step': trained.step, 'inputs': inputs, 'max_body_bytes': MAX_BODY_BYTES,
          'eval': eval_figures(workdir)}


class Classifier:
  """Request bodies -> `--mode=predict`'s fields for one input.

  Model calls are serialised under a lock: `TrainedModel.predict` compiles and caches its jitted
  function on first use (functools.cached_property takes no lock) and a text model's Keras tokenizer
  is built lazily and is not documented as thread-safe. A CPU already runs one call on all its cores,
  so serialising costs little; reading and decoding request bodies still runs in parallel."""

  def __init__(self, trained: TrainedModel):
    self.trained = trained
    self._lock = threading.Lock()

  def warm_up(self) -> None:
    """One prediction, so that compiling does not delay the first request."""
    if self.trained.kind == 'text':
      self._predict(['warm up'])
    else:
      self._predict(np.zeros((1, *self.trained.input_shape), np.uint8))

  def _predict(self, inputs) -> np.ndarray:
    with self._lock:
      return self.trained.predict(inputs)[0]

  def answer(self, body: bytes) -> dict:
    """The answer to a POST /predict body (already checked to be non-empty and under the limit)."""
    if self.trained.kind == 'text':
      text = self._text(body)
      return {'text': text, **prediction_fields(self.trained.class_names, self._predict([text]))}
    image = self._image(body)
    return prediction_fields(self.trained.class_names, self._predict(image[None]))

  def _text(self, body: bytes) -> str:
    if _is_image(body):
      raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                         f'the body is an image, but this is a text model ({self.trained.config.data_name}); '
                         'send JSON {"text": "..."}')
    try:
      value = json.loads(body.decode('utf-8'))
    except UnicodeDecodeError as e:
      raise RequestError(HTTPStatus.BAD_REQUEST, f'the body is not UTF-8 ({e.reason} at byte {e.start}); '
                         'send JSON {"text": "..."} encoded as UTF-8') from e
    except json.JSONDecodeError as e:
      raise RequestError(HTTPStatus.BAD_REQUEST, f'the body is not JSON ({e.msg} at character {e.pos}); '
                         'send JSON {"text": "..."}') from e
    if not isinstance(value, dict) or not isinstance(value.get('text'), str):
      raise RequestError(HTTPStatus.BAD_REQUEST,
                         'the JSON has no "text" string; send JSON {"text": "..."}')
    if not value['text'].strip():
      raise RequestError(HTTPStatus.BAD_REQUEST, 'the text is empty; send JSON {"text": "..."} with the '
                         'text to classify')
    return value['text']

  def _image(self, body: bytes) -> np.ndarray:
    from PIL import Image
    try:
      # The bytes go through the very reader --mode=predict uses on a file (EXIF rotation included).
      return read_image(io.BytesIO(body), self.trained.input_shape)
    except Image.DecompressionBombError as e:
      raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                         f'the image is too large to decode ({e}); send a smaller image') from e
    except ZooError as e:
      if _is_text_request(body):
        raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                           f'the body is a text, but this is an image model ({self.trained.config.data_name}); '
                           "send an image file's bytes (curl --data-binary @cat.jpg URL/predict)") from e
      reason = type(e.__cause__).__name__ if e.__cause__ else 'unreadable'
      raise RequestError(HTTPStatus.BAD_REQUEST, f'the body is not an image Pillow reads ({reason}); send an '
                         "image file's bytes (PNG, JPEG, GIF, BMP, WebP, TIFF, ...)") from e


def _is_image(body: bytes) -> bool:
  """Whether Pillow recognises the bytes as an image (it reads only the header)."""
  from PIL import Image, UnidentifiedImageError
  try:
    with Image.open(io.BytesIO(body)):
      return True
  except (UnidentifiedImageError, OSError, ValueError):
    return False


def _is_text_request(body: bytes) -> bool:
  try:
    return isinstance(json.loads(body.decode('utf-8')).get('text'), str)
  except (ValueError, AttributeError):
    return False


class _Handler(BaseHTTPRequestHandler):
  """The three routes of `ROUTES`; every error is one JSON line and closes the connection (the client
  may not have sent, or we may not have read, the whole body)."""
  server: 'DemoServer'
  protocol_version = 'HTTP/1.1'  # keep-alive, and a 413 before the body instead of "100 Continue"
  server_version = 'zoo-demo'
  timeout = 60  # seconds a client may stay silent mid-request before its connection is dropped

  def do_GET(self):
    self._get(send_body=True)

  def do_HEAD(self):
    self._get(send_body=False)

  def do_POST(self):
    if self._allowed():
      try:
        body = self._read_body()
        self._send(HTTPStatus.OK, self.server.classifier.answer(body))
      except RequestError as e:
        self._send_error(e.status, str(e))
      except Exception as e:  # a bug, not the client's: say so in one line and keep serving
        log.exception('POST %s failed', self.path)
        self._send_error(HTTPStatus.INTERNAL_SERVER_ERROR, f'the server failed ({type(e).__name__}: {e}); '
                         'see the server\'s log')

  def __getattr__(self, name):
    # BaseHTTPRequestHandler answers a method without a do_<METHOD> with 501; any method other than
    # the route's is 405 (Method Not Allowed) here, or 404 on an unknown path.
    if name.startswith('do_'):
      return self._allowed
    raise AttributeError(name)

  def handle_expect_100(self):
    """A client announcing an oversized body (curl does past 1 MB) hears 413 before sending it."""
    try:
      self._check_length()
    except RequestError as e:
      self._send_error(e.status, str(e))
      return False
    return super().handle_expect_100()

  def _route(self) -> str:
    return urlsplit(self.path).path

  def _allowed(self) -> bool:
    """Whether the path exists and answers this method; if not, the 404 or 405 is sent."""
    methods = ROUTES.get(self._route())
    if methods is None:
      self._send_error(HTTPStatus.NOT_FOUND, f'no page {self._route()!r} here; open / for the demo page '
                       'or POST to /predict')
      return False
    if self.command not in methods:
      self._send_error(HTTPStatus.METHOD_NOT_ALLOWED, f'{self._route()} does not answer {self.command}; use '
                       f'{" or ".join(methods)}', headers={'Allow': ', '.join(methods)})
      return False
    return True

  def _get(self, send_body: bool) -> None:
    if not self._allowed():
      return
    if self._route() == '/':
      self._send(HTTPStatus.OK, self.server.page, 'text/html; charset=utf-8', send_body)
    else:
      self._send(HTTPStatus.OK, model_summary(self.server.classifier.trained, self.server.workdir),
                 send_body=send_body)

  def _check_length(self) -> int:
    """The announced body length, checked before anything is read."""
    if self.headers.get('Transfer-Encoding'):
      raise RequestError(HTTPStatus.LENGTH_REQUIRED, 'chunked bodies are not read here; send the body with '
                         'a Content-Length (curl --data-binary @FILE does)')
    length = self.headers.get('Content-Length', '0')  # none: no body (HTTP/1.1)
    if not length.strip().isdigit():
      raise RequestError(HTTPStatus.BAD_REQUEST, f'Content-Length {length!r} is not a byte count; send the '
                         'body with its length (curl --data-binary @FILE does)')
    if int(length) > MAX_BODY_BYTES:
      raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f'the body is {int(length):,} bytes, over the '
                         f'{MAX_BODY_BYTES:,}-byte limit; send a smaller file')
    return int(length)

  def _read_body(self) -> bytes:
    length = self._check_length()
    if length == 0:
      what = 'JSON {"text": "..."}' if self.server.classifier.trained.kind == 'text' else "an image file's bytes"
      raise RequestError(HTTPStatus.BAD_REQUEST, f'the body is empty; send {what}')
    body = self.rfile.read(length)
    if len(body) < length:
      raise RequestError(HTTPStatus.BAD_REQUEST, f'the body ended after {len(body)} of {length} bytes; send '
                         'the whole file')
    return body

  def _send(self, status: HTTPStatus, content, content_type: str = 'application/json',
            send_body: bool = True, headers: dict | None = None) -> None:
    data = content if isinstance(content, bytes) else (json.dumps(content) + '\n').encode('utf-8')
    self.send_response(status)
    self.send_header('Content-Type', content_type)
    self.send_header('Content-Length', str(len(data)))
    self.send_header('Cache-Control', 'no-store')  # the page reads eval.json afresh on each load
    self.send_header('X-Content-Type-Options', 'nosniff')
    for name, value in (headers or {}).items():
      self.send_header(name, value)
    if status >= 400:
      self.send_header('Connection', 'close')
      self.close_connection = True
    self.end_headers()
    if send_body:
      self.wfile.write(data)

  def _send_error(self, status: HTTPStatus, message: str, headers: dict | None = None) -> None:
    self._send(status, {'error': message}, send_body=self.command != 'HEAD', headers=headers)

  def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's signature)
    log.info('%s %s', self.address_string(), format % args)


class DemoServer(ThreadingHTTPServer):
  """The server `make_server` returns: `url`, `serve_forever()`, `shutdown()`, `server_close()`."""
  daemon_threads = True  # a slow client never keeps the process from exiting on Ctrl-C

  def __init__(self, address: tuple[str, int], classifier: Classifier, workdir: Path):
    self.classifier, self.workdir = classifier, Path(workdir)
    self.page = resources.files('zoo').joinpath(PAGE_FILE).read_bytes()
    if ':' in address[0]:
      self.address_family = socket.AF_INET6
    super().__init__(address, _Handler)

  @property
  def url(self) -> str:
    host, port = self.server_address[:2]
    return f'http://[{host}]:{port}/' if ':' in host else f'http://{host}:{port}/'


def make_server(trained: TrainedModel, workdir, host: str = '127.0.0.1', port: int = 8000) -> DemoServer:
  """A server for `trained` (restored from `workdir`, whose eval.json the page shows), listening on
  host:port (port 0: any free port; `server.url` says which), warmed up; call `serve_forever()`."""
  classifier = Classifier(trained)
  try:
    server = DemoServer((host, port), classifier, workdir)
  except OSError as e:
    reason = e.strerror or str(e)
    if e.errno == errno.EADDRINUSE:
      raise ZooError(f'port {port} on {host} is in use ({reason}); pass another --port, or stop the '
                     'program listening there') from e
    raise ZooError(f'cannot listen on {host}:{port} ({reason}); pass a --host of this machine '
                   '(127.0.0.1: this machine only; 0.0.0.0: every network) and a free --port') from e
  classifier.warm_up()  # after binding, so that a taken port is named without waiting for a compile
  return server
