"""The demo page and its API: a local web server around a trained model (`python -m experiments.serve`).

`make_server(trained, workdir, host, port, limits)` returns a `DemoServer`, Python's standard library's
HTTP server with the bounds it leaves to its user added here (a page and one POST endpoint need no
framework, and the demo runs on what the zoo installs). It answers

  GET  /         the page (zoo/demo.html: HTML, CSS and JS in one file, nothing from the internet)
  GET  /info     the model, its dataset and classes, and the figures of `<workdir>/eval.json`
  POST /predict  an image file's bytes (image models) or {"text": "..."} (text models) -> the fields of
                 the line `--mode=predict` prints for that input (`zoo.inference.prediction_fields`)

and nothing else: no file is served by path, and the workdir is only read. Every error, the standard
library's own refusals of malformed requests included, is a 4xx or 5xx status with one line of JSON,
{"error": "<problem>; <fix>"}, and the server keeps serving. What a client may cost is bounded by
`Limits` (docs/serving.md): connections served at once, a deadline for a request's headers and one for
its body, the body's size, an image's pixels (read from its header, before decoding) and formats. On a
loopback address only requests that name this machine in their Host header are answered, so that a page
of another site cannot reach the server by DNS rebinding; a page of another origin is refused too.
"""
import concurrent.futures
import dataclasses
import errno
import io
import ipaddress
import json
import logging
import math
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from zoo import workdir as workdir_lib
from zoo.data.images import ImageTooLarge
from zoo.errors import ZooError
from zoo.inference import TrainedModel, prediction_fields, read_image

log = logging.getLogger('zoo')

MAX_BODY_BYTES = 10 * 2**20  # a photo fits; the body is held in memory while it is decoded
MAX_IMAGE_PIXELS = 40_000_000  # a 7,750 x 5,160 photo; as RGBA, decoding it holds about 350 MB
# The Pillow formats a user uploads; no other decoder (EPS's Ghostscript, TIFF's, ...) sees a request.
IMAGE_FORMATS = ('PNG', 'JPEG', 'GIF', 'BMP', 'WEBP')
IMAGE_FORMAT_NAMES = 'PNG, JPEG, GIF, BMP or WebP'
PAGE_FILE = 'demo.html'
# eval.json keys the page shows, when present (older workdirs have only some of them).
EVAL_FIGURES = ('accuracy', 'top5_accuracy', 'macro_f1', 'loss', 'ece', 'split', 'step', 'num_examples')
# Path -> the methods it answers; any other path is 404, any other method 405.
ROUTES = {'/': ('GET', 'HEAD'), '/info': ('GET', 'HEAD'), '/predict': ('POST',)}
# The Host names that mean this machine without asking DNS (besides loopback addresses such as 127.0.0.1).
LOOPBACK_NAMES = ('localhost',)
MAX_REQUEST_LINE = 65536  # bytes, as the standard library's server allows


@dataclasses.dataclass(frozen=True)
class Limits:
  """What clients may cost the server. The defaults suit one person's demo on their own machine
  (docs/serving.md says why each); tests pass shorter deadlines."""
  connections: int = 16  # served at once, one thread each; later ones wait in the listen queue
  header_seconds: float = 10.0  # a request's line and headers, from the connection or the last answer
  body_seconds: float = 10.0  # the whole body, from the end of the headers
  body_bytes: int = MAX_BODY_BYTES
  image_pixels: int = MAX_IMAGE_PIXELS  # width x height in the image's header, checked before decoding


class RequestError(Exception):
  """A request the server cannot answer: its HTTP status and the one-line `<problem>; <fix>`."""

  def __init__(self, status: HTTPStatus, message: str):
    super().__init__(message)
    self.status = status


def eval_figures(workdir: Path) -> dict | None:
  """The figures of the workdir's eval.json that the page shows, or None when there is none yet or it
  cannot be read (the page then shows no figures instead of failing): only a string split and finite
  numbers are passed on, so that the answer is strict JSON whatever the file holds."""
  try:
    report = workdir_lib.read_eval(workdir)
  except (ZooError, OSError, ValueError, RecursionError) as e:  # damaged, unreadable or absurdly nested
    log.warning('eval.json left out: %s', e)
    return None
  if report is None:
    return None
  if not isinstance(report, dict):
    log.warning('eval.json left out: it holds no JSON object')
    return None
  return {key: report[key] for key in EVAL_FIGURES if key in report and _is_figure(key, report[key])}


def _is_figure(key: str, value) -> bool:
  if key == 'split':
    return isinstance(value, str)
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def model_summary(trained: TrainedModel, workdir: Path, limits: Limits = Limits()) -> dict:
  """What the page shows beside the predictions; eval.json is read on each call, so a `--mode=eval`
  run while the server is up shows on the next page load."""
  from PIL import Image
  Image.init()  # every plugin registered, with its MIME type
  description = trained.description
  if trained.kind == 'image':
    height, width, channels = trained.input_shape
    inputs = f'{width}x{height} {"RGB" if channels == 3 else "grayscale"} images'
  else:
    inputs = f'texts, first {description["inputs"]["max_length"]} words'
  return {'model': trained.config.model, 'dataset': description.get('dataset') or trained.config.data_name,
          'kind': trained.kind, 'num_classes': len(trained.class_names), 'class_names': trained.class_names,
          'step': trained.step, 'inputs': inputs, 'max_body_bytes': limits.body_bytes,
          'max_image_pixels': limits.image_pixels, 'image_formats': IMAGE_FORMAT_NAMES,
          'image_types': [Image.MIME[name] for name in IMAGE_FORMATS], 'eval': eval_figures(workdir)}


class Classifier:
  """Request bodies -> `--mode=predict`'s fields for one input.

  Decoding and model calls run on one worker thread, one request at a time. Decoding, so that at most
  one image's pixels are in memory however many clients send one (`Limits.image_pixels` bounds each),
  and always in the same thread's memory arena (from several threads, each decode would leave the
  process larger); `TrainedModel.predict`, because it compiles and caches its jitted function on
  first use (functools.cached_property takes no lock) and a text model's tokenizer (`zoo.data.tokenizer`,
  the Keras rules in plain Python) is built lazily, without a lock. A CPU already runs one call on all its cores, so
  serialising costs little; connection threads still read requests in parallel."""

  def __init__(self, trained: TrainedModel, limits: Limits = Limits()):
    self.trained, self.limits = trained, limits
    self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='zoo-demo-model')

  def close(self) -> None:
    self._worker.shutdown(wait=False)

  def warm_up(self) -> None:
    """One prediction, so that compiling does not delay the first request."""
    if self.trained.kind == 'text':
      self._on_worker(self.trained.predict, ['warm up'])
    else:
      self._on_worker(self.trained.predict, np.zeros((1, *self.trained.input_shape), np.uint8))

  def _on_worker(self, function, *args):
    return self._worker.submit(function, *args).result()

  def answer(self, body: bytes) -> dict:
    """The answer to a POST /predict body (already checked to be non-empty and under the limit)."""
    if self.trained.kind == 'text':
      text = self._text(body)
      probabilities = self._on_worker(self.trained.predict, [text])[0]
      return {'text': text, **prediction_fields(self.trained.class_names, probabilities)}
    probabilities = self._on_worker(lambda: self.trained.predict(self._image(body)[None]))[0]
    return prediction_fields(self.trained.class_names, probabilities)

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
    except (ValueError, RecursionError) as e:  # a number of thousands of digits; arrays nested thousands deep
      reason = 'nested too deeply' if isinstance(e, RecursionError) else str(e).split(':')[0]
      raise RequestError(HTTPStatus.BAD_REQUEST, f'the body is JSON this server does not read ({reason}); '
                         'send JSON {"text": "..."}') from e
    if not isinstance(value, dict) or not isinstance(value.get('text'), str):
      raise RequestError(HTTPStatus.BAD_REQUEST,
                         'the JSON has no "text" string; send JSON {"text": "..."}')
    if not value['text'].strip():
      raise RequestError(HTTPStatus.BAD_REQUEST, 'the text is empty; send JSON {"text": "..."} with the '
                         'text to classify')
    return value['text']

  def _image(self, body: bytes) -> np.ndarray:
    try:
      # The bytes go through the reader --mode=predict uses on a file (EXIF rotation included), in the
      # formats a user uploads and with the size checked from the header before any pixel is decoded.
      return read_image(io.BytesIO(body), self.trained.input_shape, IMAGE_FORMATS, self.limits.image_pixels)
    except ImageTooLarge as e:
      raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(e)) from e
    except ZooError as e:
      if _is_text_request(body):
        raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                           f'the body is a text, but this is an image model ({self.trained.config.data_name}); '
                           "send an image file's bytes (curl --data-binary @cat.jpg URL/predict)") from e
      reason = type(e.__cause__).__name__ if e.__cause__ else 'unreadable'
      raise RequestError(HTTPStatus.BAD_REQUEST, f'the body is not a {IMAGE_FORMAT_NAMES} image this server '
                         f"reads ({reason}); send an image file's bytes in one of these formats") from e


def _is_image(body: bytes) -> bool:
  """Whether Pillow recognises the bytes as an image of an accepted format (it reads only the header)."""
  from PIL import Image
  try:
    with Image.open(io.BytesIO(body), formats=IMAGE_FORMATS):
      return True
  except Image.DecompressionBombError:  # an image, if a huge one
    return True
  except Exception:  # any decoder's complaint about a stranger's bytes: not an image
    return False


def _is_text_request(body: bytes) -> bool:
  try:
    return isinstance(json.loads(body.decode('utf-8')).get('text'), str)
  except (ValueError, AttributeError, RecursionError):
    return False


class _DeadlineInput(io.RawIOBase):
  """A connection's incoming bytes under a deadline for a whole phase (a request's line and headers,
  its body) rather than a timeout for each read: a client that sends a byte a second holds its thread
  no longer than one that sends nothing."""

  def __init__(self, connection: socket.socket):
    self._connection = connection
    self._deadline = math.inf
    self.received = 0  # bytes since the phase started

  def start(self, seconds: float) -> None:
    self._deadline = time.monotonic() + seconds
    self.received = 0

  def readable(self) -> bool:
    return True

  def readinto(self, buffer) -> int:
    remaining = self._deadline - time.monotonic()
    if remaining <= 0:
      raise TimeoutError('the deadline passed')
    self._connection.settimeout(remaining)
    count = self._connection.recv_into(buffer)
    self.received += count
    return count


class _Handler(BaseHTTPRequestHandler):
  """The three routes of `ROUTES` under `Limits`; every error is one JSON line and closes the connection
  (the client may not have sent, or we may not have read, the whole body)."""
  server: 'DemoServer'
  protocol_version = 'HTTP/1.1'  # keep-alive, and a 413 before the body instead of "100 Continue"
  default_request_version = 'HTTP/1.0'  # a malformed request line still gets a status line and headers
  server_version = 'zoo-demo'

  def setup(self):
    super().setup()
    self.rfile.close()  # the standard reader, with a timeout per read, gives way to one with deadlines
    self.input = _DeadlineInput(self.connection)
    self.rfile = io.BufferedReader(self.input)
    self.refused = False  # whether an error was answered: the client may still be sending

  def finish(self):
    """After a refusal the client may still be sending what was not read (a body over the limit,
    the rest of a request): our side is ended and its bytes dropped until it closes, for the body
    deadline at most, so that closing does not reset the connection before it reads the answer."""
    super().finish()
    if not self.refused:
      return
    dropped = bytearray(65536)
    try:
      self.connection.shutdown(socket.SHUT_WR)
      self.input.start(self.server.limits.body_seconds)
      while self.input.readinto(dropped):
        pass
    except OSError:  # the deadline (TimeoutError), or the client reset the connection
      pass

  def handle_one_request(self):
    """The standard library's, with the header deadline: a client that has sent part of a request
    when it passes gets a 408, one that has sent nothing (an idle keep-alive) is closed quietly."""
    limits = self.server.limits
    self.command, self.requestline, self.request_version = None, '', self.default_request_version
    self.input.start(limits.header_seconds)
    try:
      self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
      if len(self.raw_requestline) > MAX_REQUEST_LINE:
        self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG, f'The request line is over {MAX_REQUEST_LINE:,} bytes')
        return
      if not self.raw_requestline or not self.parse_request():
        self.close_connection = True
        return
    except TimeoutError:
      self.close_connection = True
      if self.input.received:
        self._send_error(HTTPStatus.REQUEST_TIMEOUT, f"the request's headers took over {limits.header_seconds:g} "
                         's; send the request at once')
      return
    try:
      getattr(self, 'do_' + self.command)()
    except (ConnectionError, TimeoutError):  # the client left or stopped reading: nobody to answer
      self.close_connection = True
    except Exception as e:  # a bug, not the client's: say so in one line and keep serving
      log.exception('%s %s failed', self.command, self.path)
      self._send_error(HTTPStatus.INTERNAL_SERVER_ERROR, f'the server failed ({type(e).__name__}: {e}); '
                       "see the server's log")

  def send_error(self, code, message=None, explain=None):
    """The standard library's own refusals (a malformed request line or version, too long or too many
    headers) in this server's form: one JSON line."""
    status = HTTPStatus(code)
    self._send_error(status, f'{message or status.phrase}; send a well-formed HTTP/1.1 request')

  def flush_headers(self):
    # Writes get the header deadline as a timeout: a client that stops reading is dropped, not waited on.
    self.connection.settimeout(self.server.limits.header_seconds)
    super().flush_headers()

  def do_GET(self):
    self._get(send_body=True)

  def do_HEAD(self):
    self._get(send_body=False)

  def do_POST(self):
    if self._admitted():
      try:
        body = self._read_body()
        self._send(HTTPStatus.OK, self.server.classifier.answer(body))
      except RequestError as e:
        self._send_error(e.status, str(e))

  def __getattr__(self, name):
    # BaseHTTPRequestHandler answers a method without a do_<METHOD> with 501; any method other than
    # the route's is 405 (Method Not Allowed) here, or 404 on an unknown path.
    if name.startswith('do_'):
      return self._admitted
    raise AttributeError(name)

  def handle_expect_100(self):
    """A client that waits for "100 Continue" before sending its body (curl does past 1 MB) is
    invited only to a request that will be read; any refusal comes instead, before the body."""
    if not self._admitted():
      return False
    if self.command != 'POST':
      return True  # no body to invite
    try:
      self._check_length()
    except RequestError as e:
      self._send_error(e.status, str(e))
      return False
    return super().handle_expect_100()

  def _route(self) -> str:
    return urlsplit(self.path).path

  def _admitted(self) -> bool:
    """Whether the request names this server, comes from no other origin, and its path exists and
    answers its method; if not, the refusal is sent."""
    try:
      self._check_host()
    except RequestError as e:
      self._send_error(e.status, str(e))
      return False
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

  def _check_host(self) -> None:
    """On a loopback address, the Host header must name this machine (localhost or a loopback
    address), so that a site whose name resolves to 127.0.0.1 (DNS rebinding) is refused; an Origin
    header, which browsers send with every POST, must be this server's own."""
    hosts = self.headers.get_all('Host') or []
    if len(hosts) > 1:
      raise RequestError(HTTPStatus.BAD_REQUEST, 'the request has several Host headers; send one')
    host = hosts[0].strip() if hosts else ''
    if self.server.loopback and not _names_this_machine(host):
      raise RequestError(HTTPStatus.FORBIDDEN, f'this server answers requests for this machine only, not for '
                         f'Host {host!r}; open {self.server.url}')
    origin = self.headers.get('Origin')
    if origin is not None and origin.strip().lower() != f'http://{host}'.lower():
      raise RequestError(HTTPStatus.FORBIDDEN, f'a page of {origin} may not use this server; open '
                         f'{self.server.url} itself')

  def _get(self, send_body: bool) -> None:
    if not self._admitted():
      return
    if self.headers.get('Content-Length', '0').strip() != '0':
      self.close_connection = True  # a body, unread, would be taken for the next request
    if self._route() == '/':
      self._send(HTTPStatus.OK, self.server.page, 'text/html; charset=utf-8', send_body)
    else:
      summary = model_summary(self.server.classifier.trained, self.server.workdir, self.server.limits)
      self._send(HTTPStatus.OK, summary, send_body=send_body)

  def _check_length(self) -> int:
    """The announced body length, checked before anything is read."""
    if self.headers.get('Transfer-Encoding'):
      raise RequestError(HTTPStatus.LENGTH_REQUIRED, 'chunked bodies are not read here; send the body with '
                         'a Content-Length (curl --data-binary @FILE does)')
    lengths = [value.strip() for value in self.headers.get_all('Content-Length') or ['0']]
    length = lengths[0]
    if len(set(lengths)) > 1 or not (length.isascii() and length.isdigit()):
      raise RequestError(HTTPStatus.BAD_REQUEST, f'Content-Length {", ".join(lengths)!r} is not a byte count; '
                         'send the body with its length (curl --data-binary @FILE does)')
    limit, digits = self.server.limits.body_bytes, length.lstrip('0') or '0'
    if len(digits) > len(str(limit)) or int(digits) > limit:  # no int() of thousands of digits
      size = f'{int(digits):,}' if len(digits) <= 30 else f'a {len(digits):,}-digit number of'
      raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f'the body is {size} bytes, over the {limit:,}-byte '
                         'limit; send a smaller file')
    return int(digits)

  def _read_body(self) -> bytearray:
    """The whole body, within the body deadline: a short body (the client closes early) is a 400, a
    slow one (the deadline passes first) a 408."""
    length = self._check_length()
    if length == 0:
      what = 'JSON {"text": "..."}' if self.server.classifier.trained.kind == 'text' else "an image file's bytes"
      raise RequestError(HTTPStatus.BAD_REQUEST, f'the body is empty; send {what}')
    seconds = self.server.limits.body_seconds
    body, received = bytearray(length), 0
    view = memoryview(body)
    self.input.start(seconds)
    try:
      while received < length:
        count = self.rfile.readinto1(view[received:])
        if not count:
          raise RequestError(HTTPStatus.BAD_REQUEST, f'the body ended after {received:,} of {length:,} bytes; '
                             'send the whole file')
        received += count
    except TimeoutError as e:
      raise RequestError(HTTPStatus.REQUEST_TIMEOUT, f'{received:,} of the body\'s {length:,} bytes came in '
                         f'{seconds:g} s; send the whole body at once') from e
    return body

  def _send(self, status: HTTPStatus, content, content_type: str = 'application/json',
            send_body: bool = True, headers: dict | None = None) -> None:
    data = content if isinstance(content, bytes) else (json.dumps(content, allow_nan=False) + '\n').encode()
    self.send_response(status)
    self.send_header('Content-Type', content_type)
    self.send_header('Content-Length', str(len(data)))
    self.send_header('Cache-Control', 'no-store')  # the page reads eval.json afresh on each load
    self.send_header('X-Content-Type-Options', 'nosniff')
    for name, value in (headers or {}).items():
      self.send_header(name, value)
    if status >= 400:
      self.send_header('Connection', 'close')
      self.close_connection = self.refused = True
    self.end_headers()
    if send_body:
      self.wfile.write(data)

  def _send_error(self, status: HTTPStatus, message: str, headers: dict | None = None) -> None:
    self._send(status, {'error': message}, send_body=self.command != 'HEAD', headers=headers)

  def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's signature)
    log.info('%s %s', self.address_string(), format % args)


def _names_this_machine(host: str) -> bool:
  """Whether a Host header ('localhost:8000', '[::1]:8000', ...) names this machine without DNS."""
  try:
    name = urlsplit(f'//{host}').hostname or ''
  except ValueError:  # a malformed IPv6 address
    return False
  if name in LOOPBACK_NAMES:
    return True
  try:
    return ipaddress.ip_address(name).is_loopback
  except ValueError:
    return False


class DemoServer(ThreadingHTTPServer):
  """The server `make_server` returns: `url`, `serve_forever()`, `shutdown()`, `server_close()`.

  A thread per connection, at most `limits.connections` of them: past that, the listening thread
  waits for one to end (each ends by its deadlines at the latest) and new connections wait in the
  kernel's listen queue, so that a flood of idle connections holds a bounded number of threads."""
  daemon_threads = True  # a slow client never keeps the process from exiting on Ctrl-C
  request_queue_size = 64  # connections the kernel holds while every thread is busy

  def __init__(self, address: tuple[str, int], classifier: Classifier, workdir: Path, limits: Limits):
    self.classifier, self.workdir, self.limits = classifier, Path(workdir), limits
    self.page = resources.files('zoo').joinpath(PAGE_FILE).read_bytes()
    self._free = threading.BoundedSemaphore(limits.connections)
    self._closing = threading.Event()
    if ':' in address[0]:
      self.address_family = socket.AF_INET6
    super().__init__(address, _Handler)
    self.loopback = ipaddress.ip_address(self.server_address[0]).is_loopback

  @property
  def url(self) -> str:
    host, port = self.server_address[:2]
    return f'http://[{host}]:{port}/' if ':' in host else f'http://{host}:{port}/'

  def process_request(self, request, client_address):
    while not self._free.acquire(timeout=0.1):
      if self._closing.is_set():
        self.shutdown_request(request)
        return
    try:
      super().process_request(request, client_address)  # starts the connection's thread
    except BaseException:
      self._free.release()
      raise

  def process_request_thread(self, request, client_address):
    try:
      super().process_request_thread(request, client_address)
    finally:
      self._free.release()

  def shutdown(self):
    self._closing.set()
    super().shutdown()

  def server_close(self):
    super().server_close()
    self.classifier.close()

  def handle_error(self, request, client_address):
    """A connection that fails outside a request's answer: one log line when the client left, the
    traceback in the log when it is a bug."""
    error = sys.exc_info()[1]
    if isinstance(error, (ConnectionError, TimeoutError)):
      log.info('%s: connection ended (%s)', client_address[0], error)
    else:
      log.error('%s: connection failed', client_address[0], exc_info=True)


def make_server(trained: TrainedModel, workdir, host: str = '127.0.0.1', port: int = 8000,
                limits: Limits = Limits()) -> DemoServer:
  """A server for `trained` (restored from `workdir`, whose eval.json the page shows), listening on
  host:port (port 0: any free port; `server.url` says which), warmed up; call `serve_forever()`."""
  classifier = Classifier(trained, limits)
  try:
    server = DemoServer((host, port), classifier, workdir, limits)
  except OverflowError as e:  # a port past 65535
    raise ZooError(f'cannot listen on port {port} ({e}); pass a --port from 1 to 65535 (0: any free one)') from e
  except OSError as e:
    reason = e.strerror or str(e)
    if e.errno == errno.EADDRINUSE:
      raise ZooError(f'port {port} on {host} is in use ({reason}); pass another --port, or stop the '
                     'program listening there') from e
    raise ZooError(f'cannot listen on {host}:{port} ({reason}); pass a --host of this machine '
                   '(127.0.0.1: this machine only; 0.0.0.0: every network) and a free --port') from e
  classifier.warm_up()  # after binding, so that a taken port is named without waiting for a compile
  return server
