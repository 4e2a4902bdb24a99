"""The wheel, installed without this repository, data, network or a home: the shipped models classify
a photo and a review by name, as README's first commands promise."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import in_ci, last_json_line

ROOT = Path(__file__).resolve().parent.parent
IMAGE_MODEL, TEXT_MODEL = 'cifar10/airbench', 'imdb_reviews/ngram'


@pytest.fixture(scope='module')
def installed(tmp_path_factory) -> Path:
  """The wheel `pip wheel .` builds, unpacked as pip would install it (its files are all pure Python)."""
  out = tmp_path_factory.mktemp('wheel')
  built = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--quiet', '-w', str(out), str(ROOT)],
                         capture_output=True, text=True, timeout=600)
  if built.returncode:
    reason = f'pip wheel failed (its build backend comes from the package index): {built.stderr.strip()[-300:]}'
    if in_ci():
      pytest.fail(reason)
    pytest.skip(reason)
  site = out / 'site'
  with zipfile.ZipFile(next(out.glob('*.whl'))) as wheel:
    wheel.extractall(site)
  return site


def test_the_wheel_holds_every_shipped_model_and_its_card(installed):
  shipped = sorted(str(p.parent.relative_to(ROOT / 'zoo' / 'trained')) for p in (ROOT / 'zoo' / 'trained').glob('*/*/manifest.json'))
  assert IMAGE_MODEL in shipped and TEXT_MODEL in shipped
  for name in shipped:
    folder = installed / 'zoo' / 'trained' / name
    listed = json.loads((folder / 'manifest.json').read_text())
    assert 'MODEL_CARD.md' in str(listed), name
    assert all((folder / f).is_file() for f in os.listdir(ROOT / 'zoo' / 'trained' / name)), name


def test_an_installed_wheel_classifies_a_photo_and_a_review_offline_with_an_empty_home(installed, tmp_path):
  home, work = tmp_path / 'home', tmp_path / 'work'
  home.mkdir(), work.mkdir()
  photo = np.zeros((48, 64, 3), np.uint8)  # not 32x32: predict resizes
  photo[:24] = (90, 140, 220)              # a sky above
  photo[24:] = (60, 110, 50)               # grass below
  Image.fromarray(photo).save(work / 'photo.jpg')
  env = {'PATH': os.environ['PATH'], 'HOME': str(home), 'PYTHONPATH': str(installed), 'JAX_PLATFORMS': 'cpu',
         # Any download would go through these and fail: no network is used.
         'HTTP_PROXY': 'http://127.0.0.1:9', 'HTTPS_PROXY': 'http://127.0.0.1:9', 'NO_PROXY': ''}
  script = f"""
import json, subprocess, sys
import zoo, experiments
print(json.dumps({{'zoo': zoo.__file__, 'experiments': experiments.__file__}}), flush=True)
print(json.dumps({{'review': zoo.load({TEXT_MODEL!r}).predict(['A wonderful, moving film.']).tolist()}}), flush=True)
sys.exit(subprocess.run([sys.executable, '-m', 'experiments.cifar', '--mode=predict', '--workdir={IMAGE_MODEL}',
                         '--image=photo.jpg']).returncode)
"""
  result = subprocess.run([sys.executable, '-c', script], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
  assert all(Path(path).is_relative_to(installed) for path in lines[0].values()), lines[0]
  (negative, positive), = lines[1]['review']
  assert positive > 0.5 and abs(negative + positive - 1) < 1e-5
  answer = last_json_line(result.stdout)
  assert answer['label'] in json.loads((installed / 'zoo/trained' / IMAGE_MODEL / 'dataset.json').read_text())['class_names']
  assert sorted(os.listdir(work)) == ['photo.jpg']  # nothing written beside the photo
  assert not any(home.rglob('*.safetensors'))        # nothing downloaded or copied into a cache
