"""Any classification data: TFDS datasets by name (on mock data) and folders of your own files."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zoo
from conftest import ROOT, assert_one_line_error, last_json_line, real_data_dir, run_experiment, train_in_process

SMALL = ('--epochs=1', '--batch_size=16', '--eval_batch_size=40')
TEXT = (*SMALL, '--vocab_size=100', '--max_length=16', '--model=lstm')


@pytest.mark.parametrize('dataset, shape, classes', [
    ('mnist', [28, 28, 1], 10),
    ('fashion_mnist', [28, 28, 1], 10),
    ('cifar100', [32, 32, 3], 100),
    ('svhn_cropped', [32, 32, 3], 10),
])
def test_tfds_image_datasets_by_name_take_their_shape_and_classes_from_the_metadata(tmp_path, dataset, shape, classes):
  train_in_process('images', f'--dataset={dataset}', f'--workdir={tmp_path}', *SMALL)  # the command line's Config
  history = json.loads((tmp_path / 'history.json').read_text())
  assert len(history) == 1
  assert history[0]['eval_examples'] == 96 and history[0]['step'] == 6  # 96 mock examples, batch 16
  description = json.loads((tmp_path / 'dataset.json').read_text())
  assert description['inputs']['shape'] == shape and len(description['class_names']) == classes
  trained = zoo.load(tmp_path)
  assert trained.variables['params']['Dense_1']['kernel'].shape[-1] == classes
  assert trained.predict(np.zeros((3, 40, 50, 3), np.uint8)).shape == (3, classes)  # resized, converted


@pytest.mark.parametrize('dataset, classes, logits', [
    ('ag_news_subset', ['World', 'Sports', 'Business', 'Sci/Tech'], 4),
    ('yelp_polarity_reviews', ['1', '2'], 1),
    ('imdb_reviews', ['neg', 'pos'], 1),
])
def test_tfds_text_datasets_by_name_two_classes_one_logit_more_a_softmax(tmp_path, dataset, classes, logits):
  train_in_process('texts', f'--dataset={dataset}', f'--workdir={tmp_path}', *TEXT)  # the command line's Config
  assert json.loads((tmp_path / 'history.json').read_text())[0]['eval_examples'] == 96
  trained = zoo.load(tmp_path)
  assert trained.class_names == classes
  assert trained.variables['params']['Dense_0']['kernel'].shape[-1] == logits
  probabilities = trained.predict(['a first text', 'and a second one'])
  assert probabilities.shape == (2, len(classes))
  np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize('experiment, flags, problem, fix', [
    ('images', ('--dataset=mnist', '--model=lstm'), '--model=lstm takes token ids', 'choose one of: airbench, mlp'),
    ('texts', ('--dataset=ag_news_subset', '--model=simple_cnn'), 'takes images, not texts', 'bilstm, lstm'),
    ('images', ('--dataset=mnist', '--image_size=12'), 'at least 18x18 pixels, not 12x12', '--image_size=18'),
    ('images', ('--dataset=mnsit',), "unknown dataset 'mnsit'", 'pass a TFDS name such as mnist'),
    ('images', ('--dataset=coco',), 'not an image or text classification dataset', 'ClassLabel'),
])
def test_a_model_that_cannot_take_the_data_says_so(tmp_path, experiment, flags, problem, fix):
  result = run_experiment(experiment, f'--workdir={tmp_path / "w"}', *SMALL, *flags)
  assert_one_line_error(result, problem, fix)
  assert not (tmp_path / 'w' / 'config.json').exists()


def image_folder(root: Path, classes=('cat', 'dog', 'ship'), per_class=(12, 4)) -> Path:
  """train/ and test/ of small images of several sizes, modes and formats; class c is brighter."""
  rng = np.random.default_rng(0)
  for split, count in zip(('train', 'test'), per_class):
    for c, name in enumerate(classes):
      (root / split / name).mkdir(parents=True)
      for i in range(count):
        pixels = (rng.integers(0, 60, (20 + 7 * (i % 3), 24 + 5 * (i % 2), 3)) + 90 * c).astype(np.uint8)
        image = Image.fromarray(pixels)
        kind = i % 4
        image = image.convert({0: 'RGB', 1: 'L', 2: 'RGBA', 3: 'P'}[kind])
        image.save(root / split / name / f'{i}.{("png", "jpg", "png", "gif")[kind]}')
  return root


def snapshot(root: Path) -> dict:
  return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob('*'))}


def test_an_image_folder_trains_evaluates_and_predicts_with_its_class_names(tmp_path):
  root = image_folder(tmp_path / 'photos')
  before = snapshot(root)
  workdir = tmp_path / 'w'
  # Trained and evaluated in this process (the command line's Config), predicted through the command line.
  train_in_process('images', f'--image_folder={root}', f'--workdir={workdir}', '--epochs=4', '--batch_size=6',
                   '--eval_batch_size=6', '--optimizer=sgd', '--learning_rate=0.1', mock=False)
  assert json.loads((workdir / 'config.json').read_text())['eval_split'] == 'test'
  history = json.loads((workdir / 'history.json').read_text())
  summary = history[-1]
  assert history[-1]['eval_examples'] == 12 and history[-1]['step'] == 4 * 36 // 6
  # Measured 2026-12-02 (2-core AMD EPYC CPU, this command): 100 % with the default seed 0, but 67 %
  # and 33 % with --seed=1 and 2 (12 test images, chance 33 %): 36 images of mixed sizes and modes
  # give this CNN too few steps to learn brightness reliably, and Adam 3e-3 or SGD 0.02 for 10
  # epochs still left one seed of three at 67 %. The bar holds for seed 0 (CPU runs are
  # deterministic), not across seeds: a change of library version may break it without a bug.
  assert summary['eval_accuracy'] >= 0.9
  from zoo.training import loop
  assert loop.evaluate(workdir)['accuracy'] == summary['eval_accuracy']
  files = [root / 'test' / 'ship' / '0.png', root / 'test' / 'cat' / '2.png']
  predicted = run_experiment('images', '--mode=predict', f'--workdir={workdir}', *[f'--image={f}' for f in files],
                             mock=False)
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  labels = [json.loads(line)['label'] for line in predicted.stdout.splitlines()]
  assert labels == ['ship', 'cat']
  assert zoo.load(workdir).class_names == ['cat', 'dog', 'ship']
  assert snapshot(root) == before  # nothing written into the user's folder


def test_folder_splits_slice_like_tfds(tmp_path):
  from zoo.data import folders
  folder = folders.scan(image_folder(tmp_path / 'photos'), 'image')
  assert folder.class_names == ('cat', 'dog', 'ship')
  first, rest = folder.select('train[:75%]'), folder.select('train[75%:]')
  assert len(first) == 27 and len(rest) == 9 and not set(first) & set(rest)
  assert {label for _, label in rest} == {0, 1, 2}  # shuffled once, so a slice holds every class
  assert folder.select('train[:75%]') == first  # the same files every time
  assert len(folder.select('train+test')) == 48


def text_folder(root: Path) -> Path:
  """The aclImdb layout: <split>/<class>/<n>.txt, UTF-8."""
  words = {'neg': 'awful boring dull', 'pos': 'wonderful great superb'}
  for split, count in (('train', 16), ('test', 6)):
    for name, vocabulary in words.items():
      (root / split / name).mkdir(parents=True)
      for i in range(count):
        (root / split / name / f'{i}.txt').write_text(f'{vocabulary.split()[i % 3]} film, café {i}', encoding='utf-8')
  return root


def test_a_text_folder_trains_evaluates_and_predicts_with_its_class_names(tmp_path):
  root = text_folder(tmp_path / 'reviews')
  before = snapshot(root)
  workdir = tmp_path / 'w'
  # Trained in this process (the command line's Config), predicted through the command line.
  history, _ = train_in_process('texts', f'--text_folder={root}', f'--workdir={workdir}', '--model=lstm',
                                '--epochs=30', '--batch_size=8', '--eval_batch_size=4', '--vocab_size=50',
                                '--max_length=8', '--optimizer=adam', '--learning_rate=0.02', '--schedule=constant',
                                mock=False)
  assert json.loads((workdir / 'history.json').read_text())[-1]['eval_examples'] == 12
  # Measured 2026-12-02 (2-core AMD EPYC CPU, this command): 100 % for seeds 0, 1 and 2; each class has
  # its own three words, so anything short of every one of the 12 right is a bug.
  assert history[-1]['eval_accuracy'] == 1.0
  predicted = run_experiment('texts', '--mode=predict', f'--workdir={workdir}', '--text=a superb film',
                             '--text=so dull', mock=False)
  assert [json.loads(line)['label'] for line in predicted.stdout.splitlines()] == ['pos', 'neg']
  assert snapshot(root) == before


@pytest.mark.parametrize('damage, problem, fix', [
    (lambda root: shutil.rmtree(root / 'train' / 'dog') or shutil.rmtree(root / 'train' / 'ship'),
     'has 1 class folder (cat)', 'add a folder per class'),
    (lambda root: [p.unlink() for p in (root / 'test' / 'dog').iterdir()], 'holds no files', "add examples of 'dog'"),
    (lambda root: (root / 'test' / 'bird').mkdir(), 'different classes', 'give every split the same class folders'),
    (lambda root: (root / 'train' / 'cat' / 'broken.png').write_bytes(b'not a png'),
     'broken.png: cannot read it as an image', 'pass a file Pillow opens'),
])
def test_a_bad_image_folder_is_named_in_one_line(tmp_path, damage, problem, fix):
  root = image_folder(tmp_path / 'photos')
  damage(root)
  before = snapshot(root)
  result = run_experiment('images', f'--image_folder={root}', f'--workdir={tmp_path / "w"}', *SMALL, mock=False)
  assert_one_line_error(result, problem, fix)
  assert snapshot(root) == before and not (tmp_path / 'w' / 'config.json').exists()


def test_bad_folder_flags_are_named_in_one_line(tmp_path):
  assert_one_line_error(run_experiment('images', f'--image_folder={tmp_path / "none"}', mock=False),
                        'is not a directory', 'pass a folder laid out as')
  root = image_folder(tmp_path / 'photos')
  assert_one_line_error(run_experiment('images', f'--image_folder={root}', '--eval_split=validation', mock=False),
                        "split 'validation' cannot be read", 'available splits (its subfolders): test, train')
  reviews = text_folder(tmp_path / 'reviews')
  (reviews / 'train' / 'pos' / 'latin1.txt').write_bytes('caf\xe9'.encode('latin-1'))
  assert_one_line_error(run_experiment('texts', f'--text_folder={reviews}', f'--workdir={tmp_path / "t"}', *TEXT,
                                       mock=False), 'latin1.txt cannot be read as UTF-8', 're-encode it as UTF-8')


def test_split_to_folder_writes_a_tfds_split_as_class_folders(tmp_path):
  data_dir = real_data_dir('cifar10')
  out = tmp_path / 'cifar' / 'train'
  command = [sys.executable, '-m', 'datatools.split_to_folder', '--dataset=cifar10', f'--data_dir={data_dir}',
             '--split=train[:40]', f'--out={out}']
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert last_json_line(result.stdout)['examples'] == 40
  from zoo.data import folders
  shutil.copytree(out, tmp_path / 'cifar' / 'test')
  folder = folders.scan(tmp_path / 'cifar', 'image')
  assert folder.class_names == ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
                                'truck')
  images = folders.read_images(folder.select('train'), (32, 32, 3))
  from zoo.data import tfds_source
  original = tfds_source.load_split('cifar10', 'train[:40]', data_dir)
  order = np.argsort([path.name for path, _ in folder.select('train')])
  np.testing.assert_array_equal(images['image'][order], original['image'])  # PNG: lossless
  np.testing.assert_array_equal(images['label'][order], original['label'])
  again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert_one_line_error(again, 'exists already', 'pass a new folder')
