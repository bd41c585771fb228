"""The package as a user meets it: public names, lazy imports, the version, and `miniai fit` end to end."""

import json
import subprocess
import sys
from configparser import ConfigParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOUNDATION_NAMES = """Callback run_cbs CancelFitException CancelEpochException CancelBatchException Learner TrainLearner
MomentumLearner TrainCB DeviceCB MetricsCB ProgressCB SingleBatchCB BatchTransformCB BaseSchedCB BatchSchedCB
EpochSchedCB RecorderCB Hook Hooks HooksCallback ActivationStats to_device to_cpu def_device set_seed conv
GeneralRelu init_weights get_model DataLoaders load_fashion_mnist get_dls show_images FlipTTACB ResBlock resnet Recipe
RECIPES""".split()


def run_py(code: str) -> str:
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, cwd=ROOT).stdout


def test_star_import_gives_every_public_name_and_no_stray_ones():
    names = run_py('import miniai; ns = {}; exec("from miniai import *", ns); print(" ".join(sorted(ns)))').split()
    assert set(FOUNDATION_NAMES) <= set(names)
    assert not {'warnings', 'version', 'PackageNotFoundError', 'torcheval'} & set(names)


def test_import_defers_datasets_pyplot_and_fastprogress():
    out = run_py('import sys, miniai, miniai.data, miniai.plot; '
                 'print(*(m in sys.modules for m in ("datasets", "matplotlib.pyplot", "fastprogress")))')
    assert out.split() == ['False'] * 3


def test_torcheval_loads_without_its_deprecation_warning_and_leaves_the_filters_alone():
    code = ('import warnings; warnings.simplefilter("error"); import miniai; '
            'from torcheval.metrics import MulticlassAccuracy; miniai.MetricsCB(MulticlassAccuracy()); '
            'print(warnings.filters[0][0])')
    assert run_py(code).split() == ['error']


def test_version_has_one_source():
    cfg = ConfigParser()
    cfg.read(ROOT / 'settings.ini')
    import miniai
    from miniai.settings import project_settings
    assert miniai.__version__ == cfg['DEFAULT']['version'] == project_settings()['version']
    assert project_settings().path('nbs_path') == ROOT / 'nbs'


def test_cli_help():
    out = subprocess.run([sys.executable, '-m', 'miniai', 'fit', '--help'], capture_output=True, text=True,
                         check=True).stdout
    for flag in ('--epochs', '--lr', '--bs', '--opt', '--sched', '--data', '--device', '--seed', '--out',
                 '--limit-batches'):
        assert flag in out


@pytest.mark.parametrize('sched', ['onecycle', 'cosine', 'cyclic', 'none'])
def test_miniai_fit_end_to_end(fmnist_dir, tmp_path, sched):
    out = tmp_path / 'run'
    cmd = [sys.executable, '-m', 'miniai', 'fit', '--epochs', '2', '--limit-batches', '3', '--bs', '64',
           '--device', 'cpu', '--data', str(fmnist_dir), '--out', str(out), '--sched', sched]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = json.loads((out / 'metrics.json').read_text())
    assert [r['epoch'] for r in rows] == [0, 1]
    assert {'epoch', 'train_loss', 'valid_loss', 'accuracy', 'seconds'} <= set(rows[0])
    assert (out / 'curves.png').stat().st_size > 10_000 and (out / 'model.pt').exists()
    assert '\r' not in res.stdout and 'valid accuracy' in res.stdout
