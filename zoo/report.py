"""Where a classifier fails: metrics from its predicted probabilities, and a one-page report.

`classification_metrics` turns one pass of predictions into the numbers that `eval.json` records
(confusion matrix, per-class precision/recall/F1, macro F1, top-5 accuracy, calibration error);
`write_report` draws the figures and writes `index.html`, a single page with every picture inline so
that it opens offline and can be mailed or archived as one file. NumPy and matplotlib (whose PNGs
Pillow writes) only: no JAX, TensorFlow or training code, so that it works on saved predictions too.
"""
import base64
import html
import io
import math
import re
from pathlib import Path

import numpy as np

from zoo import workdir as workdir_lib

CALIBRATION_BINS = 15
CONFUSION_FILE = 'confusion.png'
CALIBRATION_FILE = 'calibration.png'
MISTAKES_FILE = 'mistakes.png'
HISTORY_FILE = workdir_lib.PLOT_FILE  # the training plot, copied beside the other figures
INDEX_FILE = 'index.html'

MISTAKES_SHOWN = 24        # a 4 x 6 grid of images, or a list of texts one screen or two long
TEXT_CHARS_SHOWN = 600     # a review's opening is enough to see why it was misread
CONFUSED_PAIRS_SHOWN = 10
NUMBERS_IN_CELLS_UP_TO = 20  # classes; beyond that the counts no longer fit their cells


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
  """The evaluation's numbers from class probabilities `[N, C]` and true labels `[N]`.

  The predicted class is the argmax. Returns a JSON-ready dict: `class_names`; `confusion` (rows
  true class, columns predicted class, counts); `per_class` {name: precision, recall, f1, support},
  where a class never predicted (or never present) scores 0.0 rather than NaN, as scikit-learn's
  `zero_division=0`; `macro_f1` (the unweighted mean over all C classes); `accuracy`;
  `top5_accuracy` when C >= 5; and `ece`, the expected calibration error of the top probability:
  the examples fall into 15 equal-width confidence bins over [0, 1], each closed on its right edge
  and open on its left, (k/15, (k+1)/15] (the first bin also takes 0), and ECE = sum over bins of
  (bin count / N) * |accuracy in bin - mean confidence in bin|. Binary models are passed as two
  columns (1 - p, p). One vectorised pass over the predictions: no Python loop over examples.
  """
  probabilities, labels = _checked(probabilities, labels, class_names)
  num_examples, num_classes = probabilities.shape
  predicted = probabilities.argmax(axis=1)
  confusion = np.bincount(labels * num_classes + predicted,
                          minlength=num_classes * num_classes).reshape(num_classes, num_classes)
  true_positives = np.diag(confusion)
  support = confusion.sum(axis=1)
  predicted_count = confusion.sum(axis=0)
  precision = _ratio(true_positives, predicted_count)
  recall = _ratio(true_positives, support)
  # 2TP / (2TP + FP + FN): the harmonic mean of precision and recall, defined (as 0) when both are 0.
  f1 = _ratio(2 * true_positives, support + predicted_count)
  metrics = {
      'class_names': list(class_names),
      'confusion': confusion.tolist(),
      'per_class': {name: {'precision': float(precision[c]), 'recall': float(recall[c]),
                           'f1': float(f1[c]), 'support': int(support[c])}
                    for c, name in enumerate(class_names)},
      'macro_f1': float(f1.mean()),
      'accuracy': float(true_positives.sum() / num_examples),
  }
  if num_classes >= 5:
    top5 = np.argpartition(-probabilities, 4, axis=1)[:, :5]
    metrics['top5_accuracy'] = float((top5 == labels[:, None]).any(axis=1).mean())
  bins = calibration_bins(probabilities, labels)
  metrics['ece'] = float(np.abs(bins['accuracy'] - bins['confidence']) @ bins['count'] / num_examples)
  return metrics


def calibration_bins(probabilities: np.ndarray, labels: np.ndarray, num_bins: int = CALIBRATION_BINS) -> dict:
  """Per confidence bin (equal width over [0, 1], right edges closed): example count, mean top
  probability and accuracy (both 0 in an empty bin), and the `edges` (num_bins + 1)."""
  probabilities = np.asarray(probabilities, dtype=np.float64)
  labels = np.asarray(labels)
  confidence = probabilities.max(axis=1)
  correct = probabilities.argmax(axis=1) == labels
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  # side='left' finds i with edges[i-1] < confidence <= edges[i]: bin i - 1, closed on its right.
  index = np.clip(np.searchsorted(edges, confidence, side='left') - 1, 0, num_bins - 1)
  count = np.bincount(index, minlength=num_bins)
  return {'edges': edges, 'count': count,
          'confidence': _ratio(np.bincount(index, weights=confidence, minlength=num_bins), count),
          'accuracy': _ratio(np.bincount(index, weights=correct, minlength=num_bins), count)}


def plot_history(history: list[dict], path: Path, *, title: str = '') -> None:
  """The seed's figure: training accuracy and val_accuracy per epoch, y from 0 to 1; `title` names
  the run (model and dataset)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  from matplotlib.ticker import MaxNLocator
  evaluated = [h for h in history if 'eval_accuracy' in h]  # --eval_every_epochs may skip some
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot([h['epoch'] for h in history], [h['train_accuracy'] for h in history], marker='o', label='accuracy')
  ax.plot([h['epoch'] for h in evaluated], [h['eval_accuracy'] for h in evaluated], marker='o',
          label='val_accuracy')
  ax.set_xlabel('Epoch')
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 1.25, 1.5 ticks
  if title:
    ax.set_title(title, parse_math=False)  # a '$' in a name is no formula
  ax.set_ylabel('Accuracy')
  ax.set_ylim([0, 1])
  ax.legend(loc='lower right')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_lr_find(learning_rates, smoothed_losses, suggested: float, path: Path, *, title: str = '') -> None:
  """The learning-rate range test's figure (`zoo.training.lr_find`): the smoothed loss against the
  rate on a log scale, the suggested rate marked, as fastai's `plot_lr_find` draws it."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot(learning_rates, smoothed_losses)
  marked = int(np.argmin(np.abs(np.log(np.asarray(learning_rates)) - math.log(suggested))))
  ax.plot(learning_rates[marked], smoothed_losses[marked], 'o', color='red', label=f'suggested: {suggested:.2e}')
  ax.set_xscale('log')
  ax.set_xlabel('Learning rate')
  ax.set_ylabel('Loss (smoothed)')
  if title:
    ax.set_title(title, parse_math=False)
  ax.legend(loc='upper left')
  fig.tight_layout()
  with workdir_lib.full_disk_as_error(path):
    fig.savefig(path, dpi=100)
  plt.close(fig)


def write_report(directory, metrics: dict, probabilities: np.ndarray, labels: np.ndarray, *, kind: str,
                 examples, history: list[dict], title: str, summary: dict) -> Path:
  """Writes the report of one evaluation into `directory` (created) and returns its `index.html`.

  `metrics` is `classification_metrics(probabilities, labels, class_names)`; `examples` are the
  evaluated inputs in the same order: for `kind='image'` uint8 images `[N, H, W, 1 or 3]`, for
  `kind='text'` the raw texts (str or UTF-8 bytes); `history` the training history (its plot is drawn
  when it is not empty); `summary` the run's facts shown first (model, dataset, split, step, loss,
  num_examples...). Files: confusion.png, calibration.png, mistakes.png (image models),
  history.png (when there is a history) and index.html, which holds all of them inline.
  """
  if kind not in ('image', 'text'):
    raise ValueError(f"kind must be 'image' or 'text', not {kind!r}")
  probabilities, labels = _checked(probabilities, labels, metrics['class_names'])
  if examples is not None and len(examples) != len(labels):
    raise ValueError(f'{len(examples)} examples for {len(labels)} labels')
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  class_names = metrics['class_names']
  mistakes = most_confident_mistakes(probabilities, labels, MISTAKES_SHOWN)
  num_mistakes = int((probabilities.argmax(axis=1) != labels).sum())

  figures = {CONFUSION_FILE: _confusion_png(np.asarray(metrics['confusion']), class_names),
             CALIBRATION_FILE: _calibration_png(calibration_bins(probabilities, labels), metrics['ece'])}
  if kind == 'image' and examples is not None:
    figures[MISTAKES_FILE] = _mistakes_png(examples, probabilities, labels, mistakes, num_mistakes,
                                           class_names)
  for name, png in figures.items():
    (directory / name).write_bytes(png)
  if history:
    plot_history(history, directory / HISTORY_FILE, title=title)
    figures[HISTORY_FILE] = (directory / HISTORY_FILE).read_bytes()

  page = _page(metrics, probabilities, labels, kind=kind, examples=examples, mistakes=mistakes,
               num_mistakes=num_mistakes, figures=figures, title=title, summary=summary)
  index = directory / INDEX_FILE
  partial = index.with_name(index.name + '.tmp')  # a kill never leaves half a page
  partial.write_text(page, encoding='utf-8')
  partial.replace(index)
  return index


def most_confident_mistakes(probabilities: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
  """Indices of up to `count` misclassified examples, highest predicted probability first."""
  predicted = probabilities.argmax(axis=1)
  wrong = np.flatnonzero(predicted != labels)
  confidence = probabilities[wrong, predicted[wrong]]
  return wrong[np.argsort(-confidence, kind='stable')[:count]]


def _checked(probabilities, labels, class_names) -> tuple[np.ndarray, np.ndarray]:
  """The arrays as float64 and int64, or ValueError: a mismatch here is the caller's bug, not user input."""
  probabilities = np.asarray(probabilities, dtype=np.float64)
  labels = np.asarray(labels)
  if probabilities.ndim != 2 or labels.shape != probabilities.shape[:1]:
    raise ValueError(f'probabilities must be [N, C] and labels [N]; got {probabilities.shape} and {labels.shape}')
  if len(labels) == 0:
    raise ValueError('no examples: there is nothing to measure')
  if probabilities.shape[1] != len(class_names):
    raise ValueError(f'{probabilities.shape[1]} probability columns for {len(class_names)} class names')
  if len(set(class_names)) != len(class_names):
    raise ValueError(f'class names must be distinct: {class_names}')
  if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= len(class_names):
    raise ValueError(f'labels must be integers in [0, {len(class_names)})')
  return probabilities, labels.astype(np.int64)


def _ratio(numerator, denominator) -> np.ndarray:
  """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
  numerator = np.asarray(numerator, dtype=np.float64)
  return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=np.asarray(denominator) > 0)


# --- Figures ---------------------------------------------------------------------------------------

def _figure(width: float, height: float):
  # A bare Figure, not pyplot: no global figure registry, no GUI backend, nothing to close.
  from matplotlib.figure import Figure
  return Figure(figsize=(width, height))


def _png(fig, dpi: int = 100) -> bytes:
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=dpi)
  return buffer.getvalue()


def _confusion_png(confusion: np.ndarray, class_names: list[str]) -> bytes:
  """Counts in the cells, colour by the fraction of each true class, so that small classes read
  as clearly as large ones, on a square-root scale, so that a 1 % confusion still shows among 100
  classes; figure and fonts grow with the class count up to 100 classes."""
  from matplotlib.colors import PowerNorm
  from matplotlib.ticker import FixedLocator
  num_classes = len(class_names)
  side = float(np.clip(1.5 + 0.16 * num_classes, 6.0, 18.0))
  cell_points = side * 72 * 0.75 / num_classes
  tick_size = float(np.clip(cell_points * 0.75, 4.5, 10.0))
  fig = _figure(side + 1.2, side)
  ax = fig.add_subplot()
  fraction = _ratio(confusion, confusion.sum(axis=1, keepdims=True))
  norm = PowerNorm(0.5, vmin=0, vmax=1)
  image = ax.imshow(fraction, cmap='Blues', norm=norm, interpolation='nearest')
  colorbar = fig.colorbar(image, ax=ax, fraction=0.3 / side, pad=0.02)
  colorbar.set_ticks([0, 0.05, 0.1, 0.25, 0.5, 0.75, 1])
  colorbar.set_label('fraction of the true class (square-root scale)')
  ticks = np.arange(num_classes)
  ax.xaxis.set_major_locator(FixedLocator(ticks))
  ax.yaxis.set_major_locator(FixedLocator(ticks))
  ax.set_xticklabels(class_names, fontsize=tick_size, rotation=90 if num_classes > 10 else 45,
                     ha='center' if num_classes > 10 else 'right',
                     rotation_mode='default' if num_classes > 10 else 'anchor', parse_math=False)
  ax.set_yticklabels(class_names, fontsize=tick_size, parse_math=False)
  ax.tick_params(length=0 if num_classes > 30 else 3)
  ax.set_xlabel('predicted class', fontsize=12)
  ax.set_ylabel('true class', fontsize=12)
  total = int(confusion.sum())
  accuracy = np.trace(confusion) / max(total, 1)
  ax.set_title(f'Confusion matrix: {total:,} examples, accuracy {accuracy:.2%}', fontsize=13)
  if num_classes <= NUMBERS_IN_CELLS_UP_TO:
    number_size = float(np.clip(cell_points * 0.35, 6.0, 11.0))
    for (row, column), count in np.ndenumerate(confusion):
      if count:
        ax.text(column, row, f'{count:,}', ha='center', va='center', fontsize=number_size,
                color='white' if norm(fraction[row, column]) > 0.6 else 'black')
  fig.tight_layout()
  return _png(fig)


def _calibration_png(bins: dict, ece: float) -> bytes:
  """Reliability diagram: accuracy per confidence bin against the diagonal of perfect calibration,
  with the bins' example counts beneath (a bin of three examples says little)."""
  edges, count = bins['edges'], bins['count']
  width = edges[1] - edges[0]
  filled = count > 0
  fig = _figure(6.5, 7.0)
  top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={'height_ratios': [3, 1]})
  top.plot([0, 1], [0, 1], linestyle='--', color='grey', label='perfect calibration')
  top.bar(edges[:-1][filled], bins['accuracy'][filled], width=width, align='edge', color='#4c72b0',
          edgecolor='white', label='accuracy in bin')
  gap_low = np.minimum(bins['accuracy'], bins['confidence'])[filled]
  top.bar(edges[:-1][filled], np.abs(bins['confidence'] - bins['accuracy'])[filled], bottom=gap_low,
          width=width, align='edge', color='#dd8452', alpha=0.45, edgecolor='#dd8452', hatch='//',
          label='gap to mean confidence')
  top.set_xlim(0, 1)
  top.set_ylim(0, 1)
  top.set_ylabel('accuracy')
  top.set_title(f'Reliability diagram: ECE {ece:.4f} ({len(count)} bins)')
  top.legend(loc='upper left')
  bottom.bar(edges[:-1], count, width=width, align='edge', color='#8c8c8c', edgecolor='white')
  bottom.set_ylim(0, max(count.max(), 1) * 1.25)  # room for the counts above the bars
  bottom.set_xlabel('confidence (top predicted probability)')
  bottom.set_ylabel('examples')
  for left, n in zip(edges[:-1], count):
    if n:
      bottom.text(left + width / 2, n, f'{n:,}', ha='center', va='bottom', fontsize=6.5)
  fig.tight_layout()
  return _png(fig)


def _mistakes_png(images, probabilities, labels, mistakes, num_mistakes, class_names) -> bytes:
  """The most confident mistakes as a grid, each image captioned with its true and predicted class.

  The grid is one mosaic drawn in a single axes: 24 separate axes took seconds to lay out.
  """
  columns = 6
  rows = max(1, math.ceil(len(mistakes) / columns))
  if len(mistakes) == 0:
    fig = _figure(6, 1.2)
    fig.text(0.5, 0.5, 'No mistakes: every example is classified correctly.', ha='center', va='center')
    return _png(fig)
  chosen = np.asarray(images)[mistakes]
  if chosen.ndim == 3:
    chosen = chosen[..., None]
  chosen = np.broadcast_to(chosen, chosen.shape[:3] + (3,)) if chosen.shape[-1] == 1 else chosen
  height, width = chosen.shape[1:3]
  gap = max(2, width // 16)
  caption = int(height * 0.38)  # two lines of 8-point text under an image shown 1.8 inches wide
  cell_height, cell_width = height + caption, width + gap
  mosaic = np.full((rows * cell_height, columns * cell_width + gap, 3), 255, np.uint8)
  for slot, image in enumerate(chosen):
    top, left = _cell_origin(slot, columns, cell_height, cell_width, gap)
    mosaic[top:top + height, left:left + width] = image

  figure_width = columns * 1.9
  title_inches = 0.45
  grid_inches = figure_width * mosaic.shape[0] / mosaic.shape[1]
  fig = _figure(figure_width, grid_inches + title_inches)
  ax = fig.add_axes((0, 0, 1, grid_inches / (grid_inches + title_inches)))
  ax.imshow(mosaic, interpolation='nearest' if width <= 64 else 'antialiased')
  ax.set_axis_off()
  predicted = probabilities.argmax(axis=1)
  for slot, index in enumerate(mistakes):
    top, left = _cell_origin(slot, columns, cell_height, cell_width, gap)
    guess = predicted[index]
    ax.text(left + width / 2, top + height + caption * 0.08,
            f'true: {_short(class_names[labels[index]])}\n'
            f'pred: {_short(class_names[guess])} ({probabilities[index, guess]:.2f})',
            ha='center', va='top', fontsize=8, linespacing=1.3, parse_math=False)
  fig.suptitle(f'The {len(mistakes)} most confident mistakes of {num_mistakes:,} '
               f'({num_mistakes / len(labels):.1%} of {len(labels):,} examples)', fontsize=12,
               y=1 - 0.12 / (grid_inches + title_inches), va='top')
  return _png(fig)


def _cell_origin(slot: int, columns: int, cell_height: int, cell_width: int, gap: int) -> tuple[int, int]:
  return (slot // columns) * cell_height, (slot % columns) * cell_width + gap


def _short(name: str, limit: int = 18) -> str:
  return name if len(name) <= limit else name[:limit - 1] + '…'


# --- The page --------------------------------------------------------------------------------------

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #222;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-variant-numeric: tabular-nums; }
th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f4f4f4; } td.name, th.name { text-align: left; }
table.summary td:first-child { text-align: left; color: #555; }
tr.weak td { background: #fff3f0; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.scroll { overflow-x: auto; } .scroll img { max-width: none; }
.note { color: #666; font-size: 0.92em; }
ol.mistakes li { margin-bottom: 1em; }
.verdict { font-weight: 600; } .text { white-space: pre-line; color: #333; }
nav a { margin-right: 1em; }
"""

_SUMMARY_ROWS = (('model', 'model'), ('dataset', 'dataset'), ('split', 'split'), ('step', 'step'),
                 ('num_examples', 'examples'), ('accuracy', 'accuracy'), ('loss', 'loss'),
                 ('macro_f1', 'macro F1'), ('top5_accuracy', 'top-5 accuracy'),
                 ('ece', 'ECE (15 bins)'))
_METRIC_KEYS = ('accuracy', 'macro_f1', 'top5_accuracy', 'ece')


def _page(metrics, probabilities, labels, *, kind, examples, mistakes, num_mistakes, figures, title,
          summary) -> str:
  class_names = metrics['class_names']
  e = html.escape
  parts = [f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width, initial-scale=1">'
           f'<title>{e(title)}</title><style>{_STYLE}</style></head><body>',
           f'<h1>{e(title)}</h1>',
           '<nav><a href="#summary">summary</a><a href="#confusion">confusion</a>'
           '<a href="#calibration">calibration</a><a href="#mistakes">mistakes</a>'
           '<a href="#classes">per class</a><a href="#history">history</a></nav>']

  facts = {**summary, **{k: metrics[k] for k in _METRIC_KEYS if k in metrics}}
  facts.setdefault('num_examples', len(labels))
  named = dict(_SUMMARY_ROWS)
  rows = [(named.get(key, key.replace('_', ' ')), value) for key, value in
          [(k, facts[k]) for k, _ in _SUMMARY_ROWS if k in facts] +
          [(k, v) for k, v in facts.items() if k not in named]]
  parts.append('<h2 id="summary">Summary</h2><table class="summary">' +
               ''.join(f'<tr><td>{e(label)}</td><td>{e(_format(value))}</td></tr>' for label, value in rows) +
               '</table>')

  parts.append('<h2 id="confusion">Confusion matrix</h2><p class="note">Rows are the true class, columns '
               'the predicted one; the colour is the fraction of the true class.</p>' +
               # Many classes: shown at full size (scrolling), where shrunk to the page its names blur.
               _img(figures[CONFUSION_FILE], 'confusion matrix',
                    full_size=len(class_names) > NUMBERS_IN_CELLS_UP_TO))
  parts.append(_confused_pairs(np.asarray(metrics['confusion']), class_names))

  parts.append('<h2 id="calibration">Calibration</h2><p class="note">Accuracy of the examples in each '
               'confidence bin against the diagonal a calibrated model would follow; ECE is the gap '
               'averaged over examples.</p>' + _img(figures[CALIBRATION_FILE], 'reliability diagram'))

  parts.append('<h2 id="mistakes">Most confident mistakes</h2>')
  if MISTAKES_FILE in figures:
    parts.append(_img(figures[MISTAKES_FILE], 'most confident mistakes'))
  elif kind == 'image':
    parts.append(f'<p>{num_mistakes:,} mistakes; the images were not given to the report.</p>')
  else:
    parts.append(_text_mistakes(examples, probabilities, labels, mistakes, num_mistakes, class_names))

  parts.append(_class_table(metrics))

  parts.append('<h2 id="history">Training history</h2>')
  parts.append(_img(figures[HISTORY_FILE], 'training history') if HISTORY_FILE in figures else
               '<p class="note">No training history was recorded in this workdir.</p>')
  parts.append('</body></html>\n')
  return '\n'.join(parts)


def _img(png: bytes, alt: str, full_size: bool = False) -> str:
  return (f'<div class="{"scroll" if full_size else "figure"}"><img alt="{html.escape(alt)}" '
          f'src="data:image/png;base64,{base64.b64encode(png).decode()}"></div>')


def _format(value) -> str:
  if isinstance(value, bool) or value is None:
    return str(value)
  if isinstance(value, (int, np.integer)):
    return f'{value:,}'
  if isinstance(value, (float, np.floating)):
    return f'{value:.4f}'
  return str(value)


def _confused_pairs(confusion: np.ndarray, class_names: list[str]) -> str:
  """fastai's "most confused": the largest off-diagonal counts, as true -> predicted."""
  off_diagonal = confusion.copy()
  np.fill_diagonal(off_diagonal, 0)
  order = np.argsort(-off_diagonal, axis=None, kind='stable')[:CONFUSED_PAIRS_SHOWN]
  pairs = [(np.unravel_index(i, confusion.shape), off_diagonal.flat[i]) for i in order if off_diagonal.flat[i]]
  if not pairs:
    return ''
  e = html.escape
  return ('<h3>Most confused pairs</h3><table><tr><th class="name">true class</th>'
          '<th class="name">predicted as</th><th>examples</th><th>of the true class</th></tr>' +
          ''.join(f'<tr><td class="name">{e(class_names[t])}</td><td class="name">{e(class_names[p])}</td>'
                  f'<td>{n:,}</td><td>{n / max(confusion[t].sum(), 1):.1%}</td></tr>'
                  for (t, p), n in pairs) + '</table>')


_WEAK = ' class="weak"'


def _class_table(metrics: dict) -> str:
  """Precision, recall, F1 and support per class, in class order; the weakest quarter by F1 tinted."""
  e = html.escape
  per_class = metrics['per_class']
  f1 = np.array([v['f1'] for v in per_class.values()])
  weak_below = np.quantile(f1, 0.25) if len(f1) >= 8 else -1.0
  rows = ''.join(
      f'<tr{_WEAK if v["f1"] < weak_below else ""}><td class="name">{e(name)}</td>'
      f'<td>{v["precision"]:.3f}</td><td>{v["recall"]:.3f}</td><td>{v["f1"]:.3f}</td>'
      f'<td>{v["support"]:,}</td></tr>' for name, v in per_class.items())
  note = ' Tinted rows: the lowest quarter by F1.' if weak_below >= 0 else ''
  return (f'<h2 id="classes">Per class</h2><p class="note">Macro F1 {metrics["macro_f1"]:.4f}.{note}</p>'
          '<table class="classes"><tr><th class="name">class</th><th>precision</th><th>recall</th>'
          f'<th>F1</th><th>support</th></tr>{rows}</table>')


def _text_mistakes(texts, probabilities, labels, mistakes, num_mistakes, class_names) -> str:
  if len(mistakes) == 0:
    return '<p>No mistakes: every example is classified correctly.</p>'
  if texts is None:
    return f'<p>{num_mistakes:,} mistakes; the texts were not given to the report.</p>'
  e = html.escape
  predicted = probabilities.argmax(axis=1)
  items = []
  for index in mistakes:
    guess = predicted[index]
    items.append(f'<li><span class="verdict">true: {e(class_names[labels[index]])}, predicted: '
                 f'{e(class_names[guess])} ({probabilities[index, guess]:.3f})</span>'
                 f'<div class="text">{e(_excerpt(texts[index]))}</div></li>')
  return (f'<p class="note">The {len(mistakes)} most confident of {num_mistakes:,} mistakes '
          f'({num_mistakes / len(labels):.1%} of {len(labels):,} examples), texts cut at '
          f'{TEXT_CHARS_SHOWN} characters.</p><ol class="mistakes">{"".join(items)}</ol>')


def _excerpt(text: str | bytes, limit: int = TEXT_CHARS_SHOWN) -> str:
  """The text's opening, cut at a word boundary; HTML line breaks (IMDB's `<br />`) as new lines."""
  if isinstance(text, (bytes, np.bytes_)):
    text = bytes(text).decode('utf-8', errors='replace')
  text = re.sub(r'(?i)<br\s*/?>', '\n', str(text))
  text = re.sub(r'\n\s*\n+', '\n', text).strip()
  if len(text) <= limit:
    return text
  cut = text[:limit]
  space = cut.rfind(' ')
  return (cut[:space] if space > limit * 0.8 else cut).rstrip() + ' …'
