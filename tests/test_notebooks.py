"""Execute the example notebooks in quick mode (MINIAI_QUICK=1: tiny sizes) on the real Fashion-MNIST.

Each notebook is read into memory and executed there with nbclient; the saved file is never written. A cell
that raises fails the test with nbclient's CellExecutionError, whose message holds the cell's source and
traceback.
"""

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')
pytest.importorskip('ipykernel')

from miniai.settings import project_settings  # noqa: E402

NBS_DIR = Path(project_settings().path('nbs_path'))
NOTEBOOKS = ('01_schedulers.ipynb', '02_cyclical_lr.ipynb')


@pytest.fixture
def quick_env(fmnist_dir, monkeypatch):
    """The kernel inherits this environment: quick mode, the data folder, and this Python's scripts first on
    PATH, so that the `python3` kernel starts from the same (virtual) environment as the tests."""
    monkeypatch.setenv('MINIAI_QUICK', '1')
    monkeypatch.setenv('MINIAI_DATA', str(fmnist_dir))
    monkeypatch.setenv('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
    monkeypatch.setenv('PATH', str(Path(sys.executable).parent) + os.pathsep + os.environ.get('PATH', ''))


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs(name, quick_env):
    path = NBS_DIR / name
    assert path.is_file(), f'{path} is missing'
    nb = nbformat.read(path, as_version=4)  # a copy in memory: the saved notebook is left as it is
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name='python3',
                                     resources={'metadata': {'path': str(NBS_DIR)}})
    client.execute()  # raises CellExecutionError (with the cell's source) when a cell fails
    errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])
              if o.get('output_type') == 'error']
    assert not errors, errors
