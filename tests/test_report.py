"""zoo.report: every metric against scikit-learn or a case worked out by hand; the report's files and page."""
import base64
import html
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as sk

from zoo import report


def _predictions(num_examples: int, num_classes: int, seed: int = 0, never_predicted: int | None = None):
  """Softmax probabilities that are right more often than chance, and their labels."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, num_examples)
  logits = rng.normal(size=(num_examples, num_classes)) * 1.5
  logits[np.arange(num_examples), labels] += 1.5
  if never_predicted is not None:
    logits[:, never_predicted] = -50.0  # its probability is never the largest, though it is a true class
  probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
  return (probabilities / probabilities.sum(axis=1, keepdims=True)).astype(np.float32), labels


def _assert_matches_sklearn(metrics, probabilities, labels, class_names):
  classes = list(range(len(class_names)))
  predicted = probabilities.argmax(axis=1)
  np.testing.assert_array_equal(metrics['confusion'], sk.confusion_matrix(labels, predicted, labels=classes))
  precision, recall, f1, support = sk.precision_recall_fscore_support(labels, predicted, labels=classes,
                                                                      zero_division=0)
  for c, name in enumerate(class_names):
    row = metrics['per_class'][name]
    assert row['precision'] == pytest.approx(precision[c], abs=1e-12)
    assert row['recall'] == pytest.approx(recall[c], abs=1e-12)
    assert row['f1'] == pytest.approx(f1[c], abs=1e-12)
    assert row['support'] == support[c]
  assert metrics['macro_f1'] == pytest.approx(
      sk.f1_score(labels, predicted, labels=classes, average='macro', zero_division=0), abs=1e-12)
  assert metrics['accuracy'] == pytest.approx(sk.accuracy_score(labels, predicted), abs=1e-12)
  confusion = np.asarray(metrics['confusion'])
  assert np.trace(confusion) / confusion.sum() == pytest.approx(metrics['accuracy'], abs=1e-12)
  assert confusion.sum() == len(labels)  # every example counted once
  if len(class_names) >= 5:
    assert metrics['top5_accuracy'] == pytest.approx(
        sk.top_k_accuracy_score(labels, probabilities, k=5, labels=classes), abs=1e-12)
  else:
    assert 'top5_accuracy' not in metrics


def test_ten_classes_match_sklearn():
  probabilities, labels = _predictions(2000, 10)
  names = [f'class {c}' for c in range(10)]
  metrics = report.classification_metrics(probabilities, labels, names)
  assert metrics['class_names'] == names
  assert 0.3 < metrics['accuracy'] < 0.9 and metrics['top5_accuracy'] > metrics['accuracy']
  _assert_matches_sklearn(metrics, probabilities, labels, names)


def test_never_predicted_class_scores_zero_precision_like_sklearn():
  probabilities, labels = _predictions(600, 6, seed=1, never_predicted=4)
  names = list('abcdef')
  metrics = report.classification_metrics(probabilities, labels, names)
  assert np.asarray(metrics['confusion'])[:, 4].sum() == 0 and metrics['per_class']['e']['support'] > 0
  assert metrics['per_class']['e'] == {'precision': 0.0, 'recall': 0.0, 'f1': 0.0,
                                       'support': metrics['per_class']['e']['support']}
  _assert_matches_sklearn(metrics, probabilities, labels, names)


def test_binary_two_columns_match_sklearn():
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 2, 1000)
  p_positive = 1 / (1 + np.exp(-(rng.normal(size=1000) * 2 + (labels * 2 - 1))))  # a sigmoid's output
  probabilities = np.stack([1 - p_positive, p_positive], axis=1)
  metrics = report.classification_metrics(probabilities, labels, ['neg', 'pos'])
  _assert_matches_sklearn(metrics, probabilities, labels, ['neg', 'pos'])
  assert metrics['accuracy'] == pytest.approx(((p_positive > 0.5) == labels).mean())


def test_ece_worked_by_hand():
  # 15 bins of width 1/15 = 0.0667, closed on the right: (k/15, (k+1)/15].
  #   conf 0.95 right -> 0.95 * 15 = 14.25 -> bin 14      conf 1.00 right -> bin 14 (the last edge)
  #   conf 0.92 wrong -> 13.8 -> bin 13                   conf 0.70 right -> 10.5 -> bin 10
  #   conf 0.62 wrong -> 9.3  -> bin 9                    conf 0.55 right -> 8.25 -> bin 8
  # bin 14: accuracy 1, mean confidence 0.975, gap 0.025, 2 examples; bins 13, 10, 9, 8: one
  # example each, gaps |0 - 0.92|, |1 - 0.70|, |0 - 0.62|, |1 - 0.55| = 0.92, 0.30, 0.62, 0.45.
  # ECE = (2 * 0.025 + 0.92 + 0.30 + 0.62 + 0.45) / 6 = 2.34 / 6 = 0.39.
  probabilities = np.array([[0.95, 0.05], [0.0, 1.0], [0.92, 0.08], [0.30, 0.70], [0.38, 0.62], [0.55, 0.45]])
  labels = np.array([0, 1, 1, 1, 0, 0])
  bins = report.calibration_bins(probabilities, labels)
  expected_counts = np.zeros(15, int)
  expected_counts[[14, 13, 10, 9, 8]] = [2, 1, 1, 1, 1]
  np.testing.assert_array_equal(bins['count'], expected_counts)
  assert bins['confidence'][14] == pytest.approx(0.975) and bins['accuracy'][14] == 1.0
  assert report.classification_metrics(probabilities, labels, ['a', 'b'])['ece'] == pytest.approx(0.39)


def test_a_confidence_on_a_bin_edge_falls_in_the_bin_below():
  edges = np.linspace(0, 1, 16)
  probabilities = np.array([[edges[9], 1 - edges[9]], [edges[9] + 1e-9, 1 - edges[9] - 1e-9]])
  counts = report.calibration_bins(probabilities, np.array([0, 0]))['count']
  assert counts[8] == 1 and counts[9] == 1


def test_perfectly_calibrated_predictions_have_zero_ece():
  # In each bin the mean confidence 0.8 equals the accuracy 4/5.
  probabilities = np.tile([[0.8, 0.2]], (5, 1))
  assert report.classification_metrics(probabilities, np.array([0, 0, 0, 0, 1]), ['a', 'b'])['ece'] == \
      pytest.approx(0.0, abs=1e-12)


def test_mismatched_inputs_are_refused():
  probabilities, labels = _predictions(10, 3)
  with pytest.raises(ValueError, match='3 probability columns for 2 class names'):
    report.classification_metrics(probabilities, labels, ['a', 'b'])
  with pytest.raises(ValueError, match='labels must be integers'):
    report.classification_metrics(probabilities, labels + 3, ['a', 'b', 'c'])


def _data_uris(page: str) -> list[bytes]:
  return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def _assert_self_contained(page: str):
  assert 'src="http' not in page and 'href="http' not in page and '<script' not in page.lower()
  assert 'url(' not in page and '<link' not in page  # no stylesheet or font fetched either


def _assert_class_rows(page: str, metrics: dict):
  for name, row in metrics['per_class'].items():
    assert (f'<td class="name">{html.escape(name)}</td><td>{row["precision"]:.3f}</td>'
            f'<td>{row["recall"]:.3f}</td><td>{row["f1"]:.3f}</td><td>{row["support"]:,}</td>') in page


HISTORY = [{'epoch': 1, 'train_accuracy': 0.4, 'eval_accuracy': 0.45},
           {'epoch': 2, 'train_accuracy': 0.6, 'eval_accuracy': 0.55}]


@pytest.mark.parametrize('num_classes,channels', [(10, 3), (100, 1)])
def test_image_report(tmp_path, num_classes, channels):
  probabilities, labels = _predictions(30 * num_classes, num_classes, seed=3)
  names = [f'class_{c}' for c in range(num_classes - 1)] + ['<b>odd & "quoted"</b>']
  images = np.random.default_rng(4).integers(0, 256, (len(labels), 12, 12, channels), dtype=np.uint8)
  metrics = report.classification_metrics(probabilities, labels, names)
  index = report.write_report(tmp_path / 'report', metrics, probabilities, labels, kind='image',
                              examples=images, history=HISTORY, title='simple_cnn on cifar10',
                              summary={'model': 'simple_cnn', 'dataset': 'cifar10', 'split': 'train[45000:]',
                                       'step': 700, 'loss': 1.25, 'num_examples': len(labels)})
  directory = tmp_path / 'report'
  assert index == directory / 'index.html'
  files = ['confusion.png', 'calibration.png', 'mistakes.png', 'history.png']
  for name in files:
    assert Image.open(directory / name).format == 'PNG'
  # Drawn larger for 100 classes, so that their names stay legible.
  width, height = Image.open(directory / 'confusion.png').size
  least_width, least_height = (1500, 1400) if num_classes == 100 else (600, 500)
  assert width > least_width and height > least_height

  page = index.read_text(encoding='utf-8')
  _assert_self_contained(page)
  assert sorted(_data_uris(page)) == sorted((directory / name).read_bytes() for name in files)
  assert '&lt;b&gt;odd &amp; &quot;quoted&quot;&lt;/b&gt;' in page and '<b>odd' not in page
  _assert_class_rows(page, metrics)
  for label, value in [('macro F1', metrics['macro_f1']), ('top-5 accuracy', metrics['top5_accuracy']),
                       ('ECE (15 bins)', metrics['ece']), ('accuracy', metrics['accuracy'])]:
    assert f'<td>{label}</td><td>{value:.4f}</td>' in page
  for label, value in [('model', 'simple_cnn'), ('split', 'train[45000:]'), ('step', '700'),
                       ('examples', f'{len(labels):,}'), ('loss', '1.2500')]:
    assert f'<td>{label}</td><td>{value}</td>' in page


def test_text_report_escapes_and_lists_the_most_confident_mistakes(tmp_path):
  probabilities, labels = _predictions(200, 2, seed=5)
  texts = [f'review {i}: ' + 'a fine film ' * 100 for i in range(len(labels))]
  wrong = np.flatnonzero(probabilities.argmax(axis=1) != labels)
  worst = wrong[np.argmax(probabilities[wrong].max(axis=1))]
  texts[worst] = 'Loved it.<br /><br />Really <script>alert("x")</script> & more'.encode()  # bytes, as TFDS gives
  metrics = report.classification_metrics(probabilities, labels, ['neg', 'pos'])
  index = report.write_report(tmp_path, metrics, probabilities, labels, kind='text', examples=texts,
                              history=[], title='lstm on imdb_reviews',
                              summary={'model': 'lstm', 'dataset': 'imdb_reviews'})
  assert sorted(p.name for p in tmp_path.iterdir()) == ['calibration.png', 'confusion.png', 'index.html']
  page = index.read_text(encoding='utf-8')
  _assert_self_contained(page)
  assert len(_data_uris(page)) == 2
  assert 'Really &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more' in page
  assert 'Loved it.\nReally' in page  # HTML line breaks in reviews become line breaks
  listed = re.findall(r'<li><span class="verdict">true: (\w+), predicted: (\w+) \(([0-9.]+)\)', page)
  assert len(listed) == min(len(wrong), report.MISTAKES_SHOWN)
  confidences = [float(p) for _, _, p in listed]
  assert confidences == sorted(confidences, reverse=True)
  assert confidences[0] == pytest.approx(probabilities[worst].max(), abs=5e-4)
  assert f'of {len(wrong):,} mistakes' in page
  long_text = texts[wrong[0] if wrong[0] != worst else wrong[1]]
  assert long_text not in page and ' …' in page  # cut, at a word boundary
  _assert_class_rows(page, metrics)
  assert 'No training history' in page


def test_history_plot_has_whole_epoch_ticks_and_a_title(tmp_path, monkeypatch):
  import matplotlib.pyplot as plt
  drawn = []
  monkeypatch.setattr(plt, 'close', drawn.append)
  report.plot_history(HISTORY, tmp_path / 'history.png', title='resnet20 on cifar10')
  ax = drawn[0].axes[0]
  assert ax.get_title() == 'resnet20 on cifar10'
  ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
  assert ticks == [1.0, 2.0]
  assert Image.open(tmp_path / 'history.png').format == 'PNG'
  plt.close(drawn[0])


def test_report_imports_no_jax_tensorflow_or_training_code(tmp_path):
  # `zoo/__init__` exports zoo.load (JAX); an empty `zoo` package isolates what zoo.report itself pulls in.
  code = f'''
import sys, types
package = types.ModuleType('zoo'); package.__path__ = [{str(Path(report.__file__).parent)!r}]
sys.modules['zoo'] = package
import numpy as np
from zoo import report
probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
labels = np.array([0, 0, 1])
metrics = report.classification_metrics(probabilities, labels, ['a', 'b'])
report.write_report({str(tmp_path)!r}, metrics, probabilities, labels, kind='text', examples=['x', 'y', 'z'],
                    history=[{{'epoch': 1, 'train_accuracy': 0.5, 'eval_accuracy': 0.6}}], title='t', summary={{}})
print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'tensorflow') or m == 'zoo.training'))
'''
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == '[]'
  assert (tmp_path / 'history.png').exists()
