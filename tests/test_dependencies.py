"""Every library that zoo/, experiments/, datatools/ and lab/ import is declared in pyproject.toml, so that a clean
install of the project runs it, and a checkout its lab (a library that only arrives as another one's dependency can
leave with that one's next release)."""
import ast
import importlib.metadata
import re
import sys
import tomllib

from conftest import ROOT


def imported_top_level_modules() -> dict[str, str]:
  """Each module name imported at top level by the project's code -> one file importing it."""
  modules = {}
  for folder in ('zoo', 'experiments', 'datatools', 'lab'):
    for path in sorted((ROOT / folder).rglob('*.py')):
      for node in ast.walk(ast.parse(path.read_text())):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        for name in names:
          modules.setdefault(name.split('.')[0], str(path.relative_to(ROOT)))
  return modules


def normalized(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()


def test_every_imported_library_is_a_declared_dependency():
  project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
  requirements = project['dependencies'] + [r for extra in project['optional-dependencies'].values() for r in extra]
  declared = {normalized(re.match(r'[A-Za-z0-9_.-]+', r).group()) for r in requirements}
  distributions = importlib.metadata.packages_distributions()
  undeclared = {}
  for module, where in imported_top_level_modules().items():
    if module in sys.stdlib_module_names or module in ('zoo', 'experiments', 'datatools', 'lab'):
      continue
    # A module of an extra that is not installed here has no distribution to ask: its name is then
    # the one declared (onnx, jax2onnx), so the answer does not depend on which extras are installed.
    providers = {normalized(d) for d in distributions.get(module, [])} or {normalized(module)}
    if not providers & declared:
      undeclared[module] = (where, sorted(providers))
  assert not undeclared, f'imported but not in pyproject.toml (module: file, installed by): {undeclared}'


def test_the_answer_does_not_depend_on_which_extras_are_installed(monkeypatch):
  """As on a machine with `pip install -e '.[test]'` only: the export extra's modules have no
  distribution, and the declarations still cover them."""
  installed = importlib.metadata.packages_distributions()
  without_export = {module: names for module, names in installed.items() if module not in ('onnx', 'jax2onnx', 'onnxruntime')}
  monkeypatch.setattr(importlib.metadata, 'packages_distributions', lambda: without_export)
  test_every_imported_library_is_a_declared_dependency()
