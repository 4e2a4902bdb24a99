"""Every recipe flagfile names its command in its header and parses into a valid config."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

RECIPES = sorted((ROOT / 'experiments' / 'recipes').glob('*.flags'))
PARSE = """
import json, sys
from experiments import {experiment}, launch
for path in sys.argv[1:]:
  config = launch.read_recipe(path, {experiment}.DEFAULTS)
  config.validate(1)
  print(json.dumps({{'recipe': path, 'dataset': config.dataset, 'model': config.model}}))
"""


def run_command(recipe: Path) -> str:
  header = recipe.read_text()
  match = re.search(r'^# Run: +python -m experiments\.(\w+) --flagfile=experiments/recipes/' + re.escape(recipe.name),
                    header, re.M)
  assert match, f'{recipe.name}: its header does not give its run command'
  assert re.search(r'^# Measured: ', header, re.M), f'{recipe.name}: its header does not say what was measured'
  return match.group(1)


@pytest.mark.parametrize('experiment', sorted({run_command(r) for r in RECIPES}))
def test_recipes_parse_into_valid_configs(experiment):
  recipes = [str(r) for r in RECIPES if run_command(r) == experiment]
  result = subprocess.run([sys.executable, '-c', PARSE.format(experiment=experiment), *recipes], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  parsed = [json.loads(line) for line in result.stdout.splitlines()]
  assert [p['recipe'] for p in parsed] == recipes
