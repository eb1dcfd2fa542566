"""Multi-node as users launch it: ``torchrun --nnodes N --nproc_per_node P ... train.py`` takes the world from
torchrun's environment (``--gpus`` left out, per node, or in all), names runs and batch splits nodes x processes,
and a rank that dies stops the others with a message naming it instead of a hang.

CPU only: gloo on loopback, two torchrun launchers (one per "node") of one process each, the tiny configuration.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
TINY_ARGS = ['--cond', '--batch', '4', '--cbase', '512', '--cmax', '32', '--syn_layers', '4', '--backbones',
             'tf_efficientnet_lite0', '--no-pretrained', '--interp-size', '128', '--metrics', 'none', '--workers', '0',
             '--device', 'cpu']


def torchrun_env(monkeypatch, world: int, per_node: int) -> None:
    """The variables torchrun sets in each worker (rank 0 of ``world``, ``per_node`` on each node)."""
    for key, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(per_node),
                           GROUP_WORLD_SIZE=str(world // per_node)).items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize('gpus', [None, '8', '16'])
def test_gpus_defaults_to_the_torchrun_world_and_accepts_the_per_node_count(tmp_path, digits16, train_cli,
                                                                            monkeypatch, gpus):
    torchrun_env(monkeypatch, world=16, per_node=8)
    args = ['--outdir', str(tmp_path), '--data', str(digits16), '--batch', '64', *TINY_ARGS[:1], *TINY_ARGS[3:], '-n']
    res = CliRunner().invoke(train_cli, args + (['--gpus', gpus] if gpus else []))
    assert res.exit_code == 0, res.output
    run = json.loads(res.output)['run']
    assert (run['gpus'], run['nodes'], run['batch_gpu']) == (16, 2, 4)
    assert run['desc'] == 'stylegan-xl-digits16-nodes2-gpus8-batch64'


def test_gpus_that_fits_neither_count_fails_naming_both_and_the_flag(tmp_path, digits16, train_cli, monkeypatch):
    torchrun_env(monkeypatch, world=16, per_node=8)
    res = CliRunner().invoke(train_cli, ['--outdir', str(tmp_path), '--data', str(digits16), '--gpus', '4',
                                         *TINY_ARGS, '-n'])
    assert res.exit_code != 0 and 'Traceback' not in res.output
    assert '--gpus 4' in res.output and '2 node(s) x 8 processes = 16' in res.output
    assert '--gpus 8 (per node)' in res.output and '--nproc_per_node 4' in res.output
    assert not list(tmp_path.iterdir())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = stat.read_text().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path('/proc/self/stat').exists(), reason='finds the worker processes through /proc')
def test_two_nodes_train_with_per_node_gpus_and_a_dead_rank_stops_the_other_naming_it(tmp_path, digits16):
    """Two launchers, ``--nnodes 2 --nproc_per_node 1 --node_rank R`` on loopback, each with ``--gpus 1`` (per node,
    upstream's meaning): the run starts as 2 nodes x 1 process. Rank 1's worker is then killed (SIGKILL); rank 0
    stops within a timeout, naming rank 1, instead of waiting forever in its next collective."""
    port = free_port()
    args = [str(ROOT / 'train.py'), '--outdir', str(tmp_path / 'runs'), '--data', str(digits16), '--gpus', '1',
            '--kimg', '1', '--tick', '0.004', '--snap', '1', '--batch-gpu', '2', *TINY_ARGS]
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    nodes = [subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', '--nnodes', '2', '--nproc_per_node', '1',
                               '--node_rank', str(r), '--master_addr', '127.0.0.1', '--master_port', str(port), *args],
                              env=env, stdout=open(tmp_path / f'node{r}.out', 'w'), stderr=subprocess.STDOUT,
                              start_new_session=True) for r in (0, 1)]
    try:
        deadline = time.monotonic() + 400
        while not list((tmp_path / 'runs').glob('*/training-state-*.json')):
            assert all(n.poll() is None for n in nodes), (tmp_path / 'node0.out').read_text()[-3000:]
            assert time.monotonic() < deadline, 'no snapshot within 400 s'
            time.sleep(0.1)
        (run_dir,) = (tmp_path / 'runs').iterdir()
        assert run_dir.name == '00000-stylegan-xl-digits16-nodes2-gpus1-batch4'
        (worker,) = children(nodes[1].pid)
        os.kill(worker, signal.SIGKILL)
        killed_at = time.monotonic()
        rc = nodes[0].wait(timeout=120)
        stopped_after = time.monotonic() - killed_at
    finally:
        for n in nodes:
            if n.poll() is None:
                os.killpg(n.pid, signal.SIGKILL)
            n.wait()
    out = (tmp_path / 'node0.out').read_text()
    assert 'batch 4 = 2 x 1 x 1 x 2 (nodes x processes per node x chunks x batch_gpu)' in out
    assert rc != 0 and stopped_after < 90
    assert 'Error: rank 0: a collective operation with the other ranks failed' in out, out[-3000:]
    assert 'rank 1 did not answer within' in out


def test_a_relaunch_whose_processes_fail_ends_with_one_line_naming_the_ranks(tmp_path, digits16):
    """``train.py --gpus 2`` relaunches itself through torchrun; when its processes stop (here: each says why in one
    line), the launcher ends with one line naming the failed ranks, not torchrun's ChildFailedError traceback."""
    res = subprocess.run([sys.executable, str(ROOT / 'train.py'), '--outdir', str(tmp_path), '--data', str(digits16),
                          '--gpus', '2', *TINY_ARGS, '--resume', str(tmp_path / 'missing')], capture_output=True,
                         text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert res.returncode == 1, res.stderr[-3000:]
    assert f'Error: --resume {tmp_path / "missing"}: no such file or directory' in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    # Both ranks fail on their own; whichever fails first, torchrun may stop the other with SIGTERM before it exits.
    assert last.startswith('Error: ') and 'of the 2 processes started through torchrun failed' in last, last
    states = dict(re.findall(r'rank (\d) \((exit code 1|killed by SIGTERM)\)', last))
    assert set(states) <= {'0', '1'} and 'exit code 1' in states.values(), last
    assert 'Traceback' not in res.stderr, res.stderr[-3000:]
