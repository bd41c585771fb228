"""Smoke test of the benchmarks: each runs in `--quick` mode on tiny IDX files and prints its ratios.

Only that they run and report is checked, never how fast anything is.
"""

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / 'bench'


@pytest.fixture(scope='module')
def tiny_fmnist(tmp_path_factory) -> Path:
    """A folder with the four Fashion-MNIST files (plain IDX) holding 600 + 200 random images."""
    folder, rng = tmp_path_factory.mktemp('fmnist'), np.random.default_rng(0)
    for stem, n in (('train', 600), ('t10k', 200)):
        x, y = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)
        (folder / f'{stem}-images-idx3-ubyte').write_bytes(struct.pack('>4I', 0x803, n, 28, 28) + x.tobytes())
        (folder / f'{stem}-labels-idx1-ubyte').write_bytes(struct.pack('>2I', 0x801, n) + y.tobytes())
    return folder


@pytest.mark.parametrize('script, expect', [
    ('data_pipeline.py', ['seed pipeline uses num_workers=', 'ratio seed/fast end to end', 'fit only']),
    ('overhead.py', ['tiny: ratio learner/by hand', 'seed: ratio learner/by hand', 'us/batch']),
])
def test_bench_quick(script, expect, tiny_fmnist):
    res = subprocess.run([sys.executable, str(BENCH / script), '--quick', '--data', str(tiny_fmnist)],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    for s in expect:
        assert s in res.stdout
    ratios = re.findall(r'ratio [^:]+: (\d+\.\d+)x', res.stdout)
    assert len(ratios) >= 2 and all(float(r) > 0 for r in ratios)


def test_best_sweep_smoke(tiny_fmnist, tmp_path):
    """`bench/best_sweep.py` trains its candidates through `miniai fit` in worker processes and reports each."""
    out = tmp_path / 'runs.jsonl'
    res = subprocess.run([sys.executable, str(BENCH / 'best_sweep.py'), '--device', 'cpu', '--epochs', '1',
                          '--limit-batches', '1', '--workers', '1', '--threads', '1', '--candidates', 'base,bs64',
                          '--seeds', '3', '--data', str(tiny_fmnist), '--out', str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r['name'] for r in runs) == ['base', 'bs64'] and all(r['seed'] == 3 for r in runs)
    assert all(len(r['acc']) == 1 and 0 <= r['acc'][0] <= 1 for r in runs)
    table = res.stdout.split('by mean over the seeds:')[1]
    assert re.search(r'base \d\.\d{4}  seed 3: \d\.\d{4}', table) and 'bs64' in table
