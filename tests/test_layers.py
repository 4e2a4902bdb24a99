"""The package's layering rules, checked on its source."""
import re
from pathlib import Path

ZOO = Path(__file__).resolve().parent.parent / 'zoo'


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
