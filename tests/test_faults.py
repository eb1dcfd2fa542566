"""Faults that lose no data: a corrupt newest state is passed over for the previous good one (named), a run dir
with no valid state stops the resume (naming each file and why), temp files of killed writers are cleaned up, and a
full disk during a snapshot stops the run naming the file and the free space, the previous checkpoint intact.

CPU only. Discovery tests use tiny states (tests/test_checkpoint.py); the disk-full tests run 2 steps of the tiny
training configuration, once with ENOSPC simulated in-process and once (``-m slow``) on a real 200 MiB tmpfs, when
this machine lets the test mount one in a private mount namespace (skipped otherwise).
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from test_checkpoint import save_state  # tests/test_checkpoint.py: a tiny G, a small D stand-in

from san_ext import checkpoint as ckpt
from san_ext.checkpoint import find_latest, load_training_state
from san_ext.files import remove_stale_temps
from san_ext.training.build import resolve_run_dir
from san_ext.training.config import RunConfig
from san_ext.training.errors import ResumeError

ROOT = Path(__file__).resolve().parents[1]
TINY_ARGS = ['--cond', '--batch', '4', '--cbase', '512', '--cmax', '32', '--syn_layers', '4', '--backbones',
             'tf_efficientnet_lite0', '--no-pretrained', '--interp-size', '128', '--metrics', 'none', '--workers', '0',
             '--device', 'cpu']

pytestmark = pytest.mark.usefixtures('one_thread')


def latest_cfg(outdir: Path, desc: str = 'run'):
    """The part of a TrainingConfig that resolve_run_dir reads, resuming ``latest``."""
    return SimpleNamespace(run=RunConfig(outdir=str(outdir), desc=desc, resume='latest'))


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


# -- discovery: the newest valid state, or a clear stop --------------------------------------------------------------
def test_resume_latest_falls_back_from_a_corrupt_or_truncated_newest_state_naming_both(tmp_path, caplog):
    """A newest state of the right size whose SHA-256 fails is passed over like a truncated one (discovery verifies
    what loading verifies); the warning names the skipped file, the reason and the state resumed from."""
    run_dir = tmp_path / '00000-run'
    good, newer, newest = (save_state(run_dir, n) for n in (1000, 2000, 3000))
    flip_last_byte(newest)  # same size: only the hash tells
    newer.write_bytes(newer.read_bytes()[:-100])  # truncated
    caplog.set_level(logging.WARNING)
    assert resolve_run_dir(latest_cfg(tmp_path)) == (run_dir, good)
    assert f'{newest.name} is corrupt: its SHA-256 differs' in caplog.text
    assert f'{newer.name} is truncated' in caplog.text
    assert f'resuming from {good}' in caplog.text
    assert find_latest(run_dir) == good
    load_training_state(good)  # what it points at loads


def test_resume_latest_with_state_files_but_none_valid_stops_naming_each(tmp_path):
    """Never a silent fresh start: the error lists every state file and why it is unusable, and no new run dir is
    made. Covers the crash between the tensor and sidecar renames of a reused name (other write id)."""
    run_dir = tmp_path / '00000-run'
    corrupt, orphan = save_state(run_dir, 1000), save_state(run_dir, 2000)
    flip_last_byte(corrupt)
    orphan.with_suffix('.json').unlink()  # tensors whose sidecar never came
    with pytest.raises(ResumeError) as info:
        resolve_run_dir(latest_cfg(tmp_path))
    msg = str(info.value)
    assert '--resume latest' in msg and 'none is valid' in msg and '\n' not in msg
    assert f'{corrupt.name} is corrupt: its SHA-256 differs' in msg
    assert f'{orphan.with_suffix(".json").name} is missing: {orphan.name} is incomplete' in msg
    assert [p.name for p in tmp_path.iterdir()] == ['00000-run']


def test_overwritten_and_truncated_states_are_told_apart_with_the_right_sizes(tmp_path):
    """The pair check names the actual and the recorded size when they differ, and does not call a file of the right
    size truncated when only its write id differs (new tensors under an old sidecar)."""
    path = save_state(tmp_path, 1000)
    size = path.stat().st_size
    side = path.with_suffix('.json')
    old_sidecar = side.read_text()
    save_state(tmp_path, 1000, seed=1)  # same name, same size, other write id
    side.write_text(old_sidecar)
    with pytest.raises(ckpt.CheckpointError) as info:
        load_training_state(path)
    said = str(info.value).split(path.name, 1)[1]  # after the file name (the tmp dir's name may say anything)
    assert 'write id differs' in said and 'truncated' not in said
    path.write_bytes(path.read_bytes()[:size - 10])
    with pytest.raises(ckpt.CheckpointError, match=f'has {size - 10} bytes, its sidecar records {size}'):
        load_training_state(path)


# -- temp files of killed writers ------------------------------------------------------------------------------------
def dead_pid() -> int:
    """The PID of a process that has exited (reaped)."""
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


def test_stale_temp_files_of_dead_writers_are_removed_at_resume(tmp_path, caplog):
    run_dir = tmp_path / '00000-run'
    good = save_state(run_dir, 1000)
    stale = run_dir / f'.training-state-000002.safetensors.tmp-{dead_pid()}'
    live = run_dir / f'.training-state-000003.safetensors.tmp-{os.getppid()}'  # a writer still running
    for f in (stale, live):
        f.write_bytes(b'x' * 1000)
    caplog.set_level(logging.WARNING)
    assert resolve_run_dir(latest_cfg(tmp_path)) == (run_dir, good)
    assert not stale.exists() and live.exists() and stale.name in caplog.text
    assert remove_stale_temps(run_dir) == []  # the live one stays


# -- disk full during a snapshot -------------------------------------------------------------------------------------
def assert_stopped_cleanly(run_dir: Path, output: str) -> None:
    """The run stopped naming the file and the free space; the first state is intact, no partial file is left."""
    failed = run_dir / 'training-state-000000_008.safetensors'
    assert f'no space left on device while writing {failed}' in output, output[-3000:]
    assert ' free there' in output and 'training-state-000000_004.safetensors, is intact' in output
    names = sorted(p.name for p in run_dir.iterdir())
    assert not [n for n in names if '.tmp-' in n or n.startswith('training-state-000000_008')], names
    assert find_latest(run_dir) == run_dir / 'training-state-000000_004.safetensors'
    assert load_training_state(find_latest(run_dir)).progress['cur_nimg'] == 4


def test_disk_full_while_writing_a_sidecar_stops_in_one_line_and_keeps_no_partial_state(tmp_path, digits16,
                                                                                         train_cli, monkeypatch):
    """ENOSPC simulated in-process (this process cannot rely on mounting a small file system): the second state's
    tensor file is renamed into place, then its sidecar write fails; the orphan tensor file is removed."""
    real = ckpt.write_text_atomic

    def full_for_second_state(path, text, *a, **kw):
        if Path(path).name == 'training-state-000000_008.json':
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real(path, text, *a, **kw)

    monkeypatch.setattr(ckpt, 'write_text_atomic', full_for_second_state)
    res = CliRunner().invoke(train_cli, ['--outdir', str(tmp_path), '--data', str(digits16), '--kimg', '0.012',
                                         '--tick', '0.004', '--snap', '1', *TINY_ARGS])
    assert res.exit_code == 1 and 'Traceback' not in res.output
    (run_dir,) = tmp_path.iterdir()
    assert_stopped_cleanly(run_dir, res.output)
    assert res.output.strip().splitlines()[-1].startswith('Error: no space left on device')


def _unshare_prefix(probe_dir: Path) -> list[str] | None:
    """A command prefix that runs its argument in a private mount namespace where it may mount a tmpfs (tried on
    ``probe_dir``; the mount goes with the namespace), or None."""
    if shutil.which('unshare') is None:
        return None
    for prefix in (['unshare', '--mount'], ['unshare', '--user', '--map-root-user', '--mount']):
        probe = subprocess.run([*prefix, 'sh', '-c', f'mount -t tmpfs -o size=1m tmpfs {shlex.quote(str(probe_dir))}'],
                               capture_output=True, timeout=60)
        if probe.returncode == 0:
            return prefix
    return None


@pytest.mark.slow  # writes a 173 MB state onto a tmpfs; the in-process test above guards the same code
def test_disk_full_on_a_small_tmpfs_stops_naming_path_and_free_space(tmp_path, digits16):
    """A real full disk: the run dir on a 200 MiB tmpfs holds the first snapshot (a 173 MB training state) but not
    the second. The run, and then the checks, run inside the private mount namespace that holds the tmpfs."""
    outdir = tmp_path / 'small'
    outdir.mkdir()
    prefix = _unshare_prefix(outdir)
    if prefix is None:
        pytest.skip('cannot mount a tmpfs here (needs unshare and mount rights in a private mount namespace)')
    train = [sys.executable, str(ROOT / 'train.py'), '--outdir', str(outdir), '--data', str(digits16), '--kimg',
             '0.012', '--tick', '0.004', '--snap', '1', *TINY_ARGS]
    check = (f'import sys; sys.path.insert(0, {str(ROOT / "tests")!r}); from pathlib import Path; '
             f'from test_faults import assert_stopped_cleanly; (d,) = Path({str(outdir)!r}).iterdir(); '
             'assert_stopped_cleanly(d, open(sys.argv[1]).read()); print("CHECKED")')
    log = tmp_path / 'train.log'
    q = shlex.quote
    script = (f'mount -t tmpfs -o size=200m tmpfs {q(str(outdir))} && {shlex.join(train)} > {q(str(log))} 2>&1; '
              f'echo "rc=$?"; {q(sys.executable)} -c {q(check)} {q(str(log))}')
    res = subprocess.run([*prefix, 'sh', '-c', script], capture_output=True, text=True, timeout=600,
                         env={**os.environ, 'OMP_NUM_THREADS': '1'}, cwd=ROOT)
    out = log.read_text()
    assert 'rc=1' in res.stdout and 'CHECKED' in res.stdout, (res.stdout + res.stderr)[-3000:] + out[-3000:]
    assert 'Traceback' not in out and out.strip().splitlines()[-1].startswith('Error: no space left on device')
