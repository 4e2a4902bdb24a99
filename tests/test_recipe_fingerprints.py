"""The airbench recipes train the parameters they trained before the optimizer's per-parameter
behaviour became rules (`zoo/rules.py`): a few steps of each recipe on a slice of CIFAR-10, at a
fixed seed, against a fingerprint of every parameter and BatchNorm statistic kept here.

Each rule leaves a large mark: without the 64x BatchNorm-offset rate, the head's 1/64, the frozen
whitening kernel, the whitening bias's stop, Muon's filters or the decay of every parameter, some
entry moves by far more than the tolerance, which only absorbs float rounding across CPUs.
Regenerate (after a deliberate change of a recipe's training): `python tests/test_recipe_fingerprints.py`.
"""
import dataclasses
import json
import sys
from pathlib import Path

import flax
import numpy as np
import pytest

from experiments import launch
from zoo import checkpoints
from zoo.training import loop

FINGERPRINTS = Path(__file__).with_name('recipe_fingerprints.json')
RECIPES = ('cifar_airbench', 'cifar_airbench_muon')
# One step per epoch for 4 epochs: the whitening bias stops after 3, lookahead starts at 3; a
# narrow net keeps it to seconds. Few steps keep the float rounding of another CPU from growing.
# Evaluated once, on the image alone: evaluation changes no parameter.
SLICE = dict(train_split='train[:512]', eval_split='train[512:768]', epochs=4, batch_size=512, eval_batch_size=256,
             tensorboard=False, split_cache='', eval_every_epochs=4, model_settings={'widths': (16, 32, 32), 'tta_level': 0})


def fingerprint(recipe: str, workdir, data_dir) -> dict:
  """Per array of params and batch_stats: [mean, L2 norm] after training `recipe` on the slice."""
  config = dataclasses.replace(launch.read_recipe(launch.RECIPES / f'{recipe}.flags'), **SLICE)
  loop.train_and_evaluate(config, workdir, data_dir)
  _, tree = checkpoints.restore_arrays(workdir)
  flat = flax.traverse_util.flatten_dict({k: tree[k] for k in ('params', 'batch_stats')}, sep='/')
  return {path: [float(np.mean(a, dtype=np.float64)), float(np.linalg.norm(a.astype(np.float64)))]
          for path, a in sorted(flat.items())}


@pytest.mark.slow
@pytest.mark.parametrize('recipe', RECIPES)
def test_recipe_trains_the_parameters_it_trained_before(recipe, tmp_path):
  from conftest import real_data_dir
  expected = json.loads(FINGERPRINTS.read_text())[recipe]
  found = fingerprint(recipe, tmp_path / 'w', real_data_dir('cifar10'))
  assert sorted(found) == sorted(expected)
  for path, (mean, norm) in expected.items():
    np.testing.assert_allclose(found[path], [mean, norm], rtol=1e-4, atol=1e-6, err_msg=path)


if __name__ == '__main__':
  import tempfile
  data_dir = sys.argv[1] if len(sys.argv) > 1 else None
  with tempfile.TemporaryDirectory() as root:
    prints = {recipe: fingerprint(recipe, Path(root) / recipe, data_dir) for recipe in RECIPES}
  FINGERPRINTS.write_text(json.dumps(prints, indent=1) + '\n')
  print(f'wrote {FINGERPRINTS}')
