"""The package's layering rules, checked on its source."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / 'zoo'
PROJECT = r'(?:zoo|experiments|datatools|lab)\b'


def test_tensorflow_is_imported_only_through_its_one_lazy_import():
  """`zoo/data/tensorflow_import.py` hides the accelerators from TensorFlow; any other import of it
  could grab the GPU memory JAX needs."""
  pattern = re.compile(r'^\s*(import tensorflow\b|from tensorflow\b)', re.M)
  offenders = [str(path.relative_to(ZOO)) for path in ZOO.rglob('*.py')
               if path.name != 'tensorflow_import.py' and pattern.search(path.read_text())]
  assert offenders == []


def test_lower_layers_never_import_upper_ones():
  """models -> data -> training -> checkpoints / inference: each imports only what is below it."""
  upper = {'models': ('zoo.data', 'zoo.training', 'zoo.checkpoints', 'zoo.inference'),
           'data': ('zoo.training', 'zoo.checkpoints', 'zoo.inference')}
  offenders = []
  for layer, forbidden in upper.items():
    for path in (ZOO / layer).rglob('*.py'):
      imports = re.findall(r'^\s*(?:from|import) (zoo(?:\.\w+)*)', path.read_text(), re.M)
      offenders += [f'{path.relative_to(ZOO)} imports {name}' for name in imports if name.startswith(forbidden)]
  assert offenders == []


def _zoo_imports(path: Path) -> list[str]:
  """The project's modules that `path` imports; `from zoo import a as b` counts as `zoo.a`."""
  text = path.read_text()
  modules = re.findall(rf'^\s*import ({PROJECT}(?:\.\w+)*)', text, re.M)
  for package, names in re.findall(rf'^\s*from ({PROJECT}(?:\.\w+)*) import ([\w, ]+)', text, re.M):
    if package in ('zoo', 'experiments', 'datatools', 'lab'):
      modules += [f'{package}.{name.split()[0]}' for name in names.split(',') if name.strip()]
    else:
      modules.append(package)
  return modules


def test_config_and_workdir_are_importable_from_every_layer():
  """`Config`, the rules' syntax and the workdir's owner sit below everything that uses them."""
  allowed = {'config.py': ('zoo.errors', 'zoo.models', 'zoo.cache_dirs', 'zoo.rules'),
             'workdir.py': ('zoo.config', 'zoo.errors'), 'rules.py': ('zoo.errors',), 'errors.py': (), 'cache_dirs.py': ()}
  offenders = [f'{name} imports {module}' for name, ok in allowed.items()
               for module in _zoo_imports(ZOO / name) if not module.startswith(ok) or module == 'zoo']
  assert offenders == []


def test_the_report_draws_without_training_code():
  """`zoo.report` works on saved predictions: it imports no training (nor JAX through it); training
  imports the report, for the plot it draws after each epoch."""
  offenders = [module for module in _zoo_imports(ZOO / 'report.py') if module.startswith(('zoo.training', 'zoo.inference'))]
  assert offenders == []


def test_the_package_never_imports_the_entry_points():
  offenders = [f'{path.relative_to(ZOO)} imports {module}' for path in ZOO.rglob('*.py')
               for module in _zoo_imports(path) if module.startswith(('experiments', 'datatools', 'lab'))]
  assert offenders == []


def test_nothing_installed_imports_the_lab():
  """lab/ is left out of the installed package (pyproject.toml): an import of it from zoo/,
  experiments/ or datatools/ would fail in a user's install."""
  offenders = [f'{path.relative_to(ROOT)} imports {module}' for folder in ('zoo', 'experiments', 'datatools')
               for path in (ROOT / folder).rglob('*.py') for module in _zoo_imports(path) if module.startswith('lab')]
  assert offenders == []
