"""docs/tutorial.ipynb runs top to bottom, and is committed without outputs.

The notebook runs on its small synthetic data (`TUTORIAL_FAST=1`, whatever `TFDS_DATA_DIR` holds)
in a Python kernel, with this checkout's zoo first on the path: a cell that breaks, or an assertion
of the notebook that no longer holds, fails the build. Outputs stay out of git so that a change
to the notebook diffs as the change to its text and code."""
import os

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT

NOTEBOOK = ROOT / 'docs' / 'tutorial.ipynb'


def test_committed_notebook_has_no_outputs():
  code_cells = [cell for cell in nbformat.read(NOTEBOOK, as_version=4).cells if cell.cell_type == 'code']
  assert code_cells
  with_outputs = [i for i, cell in enumerate(code_cells) if cell.outputs or cell.execution_count is not None]
  assert not with_outputs, (f'code cells {with_outputs} of {NOTEBOOK.name} keep outputs; clear them '
                            '(Jupyter: Edit > Clear Outputs of All Cells) and save')


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
  monkeypatch.setenv('TUTORIAL_FAST', '1')
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.setenv('TMPDIR', str(tmp_path))  # the notebook's workdirs and data folders
  monkeypatch.setenv('IPYTHONDIR', str(tmp_path / 'ipython'))  # the kernel's profile, out of the home directory
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')])))
  # XLA:CPU compiles without LLVM optimisation: a fifth less CPU time for this notebook's small programs.
  monkeypatch.setenv('XLA_FLAGS', '--xla_backend_optimization_level=0')
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  # Raises CellExecutionError with the failing cell's source and its traceback (in plain text).
  NotebookClient(notebook, timeout=300, kernel_name='python3', extra_arguments=['--InteractiveShell.colors=nocolor'],
                 resources={'metadata': {'path': str(tmp_path)}}).execute()
