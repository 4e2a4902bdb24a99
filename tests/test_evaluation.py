"""`--mode=eval` writes the report: eval.json's metrics agree with one another and with the
model's own predictions, and `report/` holds the figures and one self-contained page."""
import json
import shutil

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

import zoo
from conftest import last_json_line, run_experiment, train_in_process
from test_inference import mock_split

SMALL = ('--epochs=1', '--batch_size=16', '--eval_batch_size=40', '--optimizer=sgd', '--learning_rate=0.05')


@pytest.fixture(scope='module')
def mlp(tmp_path_factory):
  """An MLP trained as `python -m experiments.cifar --model=mlp` trains it, in this process."""
  workdir = tmp_path_factory.mktemp('mlp') / 'w'
  train_in_process('cifar', f'--workdir={workdir}', '--model=mlp', *SMALL)
  return workdir


@pytest.mark.parametrize('pipeline', ['device', 'tf_data'])
def test_eval_report_of_an_image_model_matches_its_predictions(mlp, tmp_path, pipeline, monkeypatch):
  workdir = tmp_path / 'w'
  shutil.copytree(mlp, workdir)  # each evaluation writes its own eval.json and report
  result = run_experiment('cifar', '--mode=eval', f'--workdir={workdir}', f'--input_pipeline={pipeline}')
  assert result.returncode == 0, result.stderr[-3000:]
  printed = last_json_line(result.stdout)
  recorded = json.loads((workdir / 'eval.json').read_text())
  assert printed == recorded
  confusion = np.array(recorded['confusion'])
  assert confusion.shape == (10, 10) and confusion.sum() == recorded['num_examples'] == 96  # each example once
  assert np.trace(confusion) / confusion.sum() == pytest.approx(recorded['accuracy'], abs=1e-12)
  # The same numbers from the restored model's own predictions, computed independently.
  test = mock_split('cifar10', 'test', monkeypatch)
  probabilities = zoo.load(workdir).predict(test['image'])
  predicted = probabilities.argmax(axis=1)
  np.testing.assert_array_equal(confusion, sk_metrics.confusion_matrix(test['label'], predicted, labels=range(10)))
  assert recorded['macro_f1'] == pytest.approx(
      sk_metrics.f1_score(test['label'], predicted, average='macro', labels=range(10), zero_division=0), abs=1e-6)
  assert recorded['top5_accuracy'] == pytest.approx(
      sk_metrics.top_k_accuracy_score(test['label'], probabilities, k=5, labels=range(10)), abs=1e-6)
  assert recorded['loss'] == pytest.approx(sk_metrics.log_loss(test['label'], probabilities, labels=range(10)),
                                           rel=1e-4)
  assert 0 <= recorded['ece'] <= 1 and set(recorded['per_class']) == set(recorded['class_names'])
  files = {p.name for p in (workdir / 'report').iterdir()}
  assert {'index.html', 'confusion.png', 'calibration.png', 'mistakes.png', 'history.png'} <= files
  page = (workdir / 'report' / 'index.html').read_text()
  assert 'data:image/png;base64,' in page and 'src="http' not in page


def test_eval_report_of_a_text_model_lists_its_mistakes_with_their_text(tmp_path):
  workdir = tmp_path / 'w'
  flags = ('--model=lstm', '--epochs=1', '--batch_size=16', '--eval_batch_size=40', '--vocab_size=50',
           '--max_length=8')
  train_in_process('imdb', f'--workdir={workdir}', *flags)
  result = run_experiment('imdb', '--mode=eval', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  recorded = json.loads((workdir / 'eval.json').read_text())
  confusion = np.array(recorded['confusion'])
  assert confusion.shape == (2, 2) and confusion.sum() == 96
  assert np.trace(confusion) / confusion.sum() == pytest.approx(recorded['accuracy'], abs=1e-12)
  assert 'top5_accuracy' not in recorded  # two classes
  assert 'mistakes.png' not in {p.name for p in (workdir / 'report').iterdir()}
  page = (workdir / 'report' / 'index.html').read_text()
  wrong = recorded['num_examples'] - int(np.trace(confusion))
  assert wrong == 0 or 'class="mistake' in page or 'mistake' in page.lower()
