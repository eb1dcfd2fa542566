"""``python -m san_ext.bench.gpu_check --out DIR``: the whole GPU check in one command, sized for a short GPU lease.

In order, each step a child process with its own time cap (a share of ``--budget-s``), stopped cleanly when it
overruns (its process group gets SIGTERM, then SIGKILL) and recorded as ``timeout``:

1. ``build``: every CUDA op built just in time for the visible GPU's architecture only (``TORCH_CUDA_ARCH_LIST``),
   the ops in parallel processes (each has its own build lock), logs kept;
2. ``tests``: ``pytest -m cuda`` on the op test files (CUDA against the reference, gradients, grad-of-grad);
3. ``ops``: ``python -m san_ext.bench.ops`` (reference vs CUDA, achieved GB/s);
4. ``networks``: ``python -m san_ext.bench.networks`` (G and D images/s and peak memory, CUDA ops vs reference; with
   ``--upstream PATH`` upstream StyleGAN-XL's stem too, from a patched checkout carried along with the tree);
5. ``train``: ``python -m san_ext.bench.train`` on the ImageNet stem16 and sr256 cases, a few ticks.

``DIR/gpu_check.json`` is rewritten after every step (atomically), so a lease that ends mid-check still leaves
what was measured; it holds the machine (GPU, driver, torch, CUDA, Python), each step's status, seconds, cap,
command, log tail and parsed result. ``DIR/gpu_check.md`` renders it (``san_ext.bench.gpu_tables``), and
``DIR/gpu_check.log`` holds every step's full output: three files, within what a device call sends back.

Without a GPU (``--device cpu``, the default when none is visible) the same steps run their CPU fallbacks (the
build still compiles for ``--arch``, the CUDA tests are skipped, the benchmarks take their tiny CPU cases): a dry
run of the control flow and of the cost on this machine. ``--dry-run`` prints the plan with each step's cap.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import click
import torch

from san_ext.files import write_text_atomic
from torch_utils.ops.loader import OP_SOURCES

__all__ = ['Step', 'plan', 'machine_info', 'run_step', 'run_check', 'main']

ROOT = Path(__file__).resolve().parents[2]
OPS = tuple(OP_SOURCES)  # the ops with a kernel of their own (filtered_lrelu composes two of them)
CUDA_TEST_FILES = ('tests/test_upfirdn2d.py', 'tests/test_bias_act.py', 'tests/test_filtered_lrelu.py',
                   'tests/test_normalized_linear.py')
SHARES = dict(build=0.30, tests=0.12, ops=0.13, networks=0.20, train=0.25)  # of the budget; sum 1
_GRACE_S = 5.0  # SIGTERM -> SIGKILL
_TAIL = 4000    # characters of each step's log kept in the JSON


@dataclass(frozen=True)
class Step:
    """One step: child commands run concurrently (the build runs one per op), the JSON files they write."""

    name: str
    commands: tuple[tuple[str, ...], ...]
    results: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)
    share: float = 0.2


def plan(device: str, work: Path, upstream: Optional[str] = None) -> list[Step]:
    """The five steps for ``device`` ('cuda' or 'cpu'), their outputs under ``work``. Every step must see the same
    ``TORCH_CUDA_ARCH_LIST`` (the op cache is keyed by it), which :func:`main` sets for all of them."""
    py = sys.executable
    gpu = device == 'cuda'
    build = Step('build', tuple((py, '-m', 'torch_utils.ops.build', '--ops', op, '--json-out',
                                 str(work / f'build_{op}.json')) for op in OPS),
                 tuple(f'build_{op}.json' for op in OPS), env=dict(MAX_JOBS=str(os.cpu_count() or 4)),
                 share=SHARES['build'])
    tests = Step('tests', ((py, '-m', 'pytest', '-m', 'cuda', '-q', '-p', 'no:cacheprovider', '-o', 'addopts=',
                            '--continue-on-collection-errors', f'--junitxml={work / "pytest_cuda.xml"}',
                            *CUDA_TEST_FILES),), ('pytest_cuda.xml',), share=SHARES['tests'])
    ops_args = () if gpu else ('--device', 'cpu', '--batch', '1', '--warmup', '1', '--repeats', '2')
    ops = Step('ops', ((py, '-m', 'san_ext.bench.ops', *ops_args, '--out', str(work / 'bench_ops.json')),),
               ('bench_ops.json',), share=SHARES['ops'])
    net_args = ('--preset', 'imagenet') if gpu else ('--preset', 'tiny', '--ops', 'ref', '--repeats', '2')
    net_args += ('--upstream', upstream) if upstream else ()
    networks = Step('networks', ((py, '-m', 'san_ext.bench.networks', *net_args, '--out',
                                  str(work / 'bench_networks.json')),), ('bench_networks.json',),
                    share=SHARES['networks'])
    train_args = (('--case', 'imagenet-stem16', '--case', 'imagenet-sr256', '--ticks', '3') if gpu
                  else ('--case', 'tiny', '--ticks', '2', '--device', 'cpu'))
    train = Step('train', ((py, '-m', 'san_ext.bench.train', *train_args, '--out',
                            str(work / 'bench_train.json')),), ('bench_train.json',), share=SHARES['train'])
    return [build, tests, ops, networks, train]


def _nvidia_smi() -> dict:
    if not shutil.which('nvidia-smi'):
        return {}
    out = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total', '--format=csv,noheader'],
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0 or not out.stdout.strip():
        return {}
    name, driver, memory = (s.strip() for s in out.stdout.strip().splitlines()[0].split(','))
    return dict(smi_name=name, driver=driver, memory=memory)


def machine_info() -> dict:
    """GPU name and capability, driver, torch, CUDA and Python versions, CPU count: which machine gave the figures."""
    info: dict[str, Any] = dict(torch=torch.__version__, cuda=torch.version.cuda, python=platform.python_version(),
                                cpus=os.cpu_count(), platform=platform.platform(), gpu=None)
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        info.update(gpu=torch.cuda.get_device_name(), capability=f'{major}.{minor}')
    return dict(info, **_nvidia_smi())


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, _GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _load_result(path: Path) -> Any:
    if not path.exists():
        return None
    if path.suffix == '.xml':  # pytest's junit report -> counts
        suite = ET.parse(path).getroot()
        suite = suite if suite.tag == 'testsuite' else suite.find('testsuite')
        return {k: int(suite.get(k, 0)) for k in ('tests', 'failures', 'errors', 'skipped')}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        return dict(unreadable=str(err))


def run_step(step: Step, cap_s: float, work: Path, log: Any) -> dict:
    """Run ``step``'s commands concurrently under ``cap_s`` seconds; returns its record (status, seconds, results)."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get('PYTHONPATH', '')) if p), **step.env)
    start = time.monotonic()
    logs = [tempfile.TemporaryFile(mode='w+') for _ in step.commands]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
             for cmd, fh in zip(step.commands, logs)]
    status = 'ok'
    try:
        for proc in procs:
            remaining = cap_s - (time.monotonic() - start)
            try:
                proc.wait(timeout=max(remaining, 0.01))
            except subprocess.TimeoutExpired:
                status = 'timeout'
                break
    finally:
        for proc in procs:
            if proc.poll() is None:
                _kill_group(proc)
    codes = [p.returncode for p in procs]
    if status == 'ok' and any(codes):
        status = 'failed'
    text = ''
    for cmd, fh in zip(step.commands, logs):
        fh.seek(0)
        text += f'$ {" ".join(cmd)}\n{fh.read()}\n'
        fh.close()
    log.write(f'===== {step.name} ({status}) =====\n{text}')
    log.flush()
    results = {name: _load_result(work / name) for name in step.results}
    return dict(name=step.name, status=status, seconds=round(time.monotonic() - start, 1), cap_s=round(cap_s, 1),
                returncodes=codes, commands=[' '.join(c) for c in step.commands], env=step.env, log_tail=text[-_TAIL:],
                results=results)


def _run_or_skip(step: Step, remaining: float, budget_s: float, work: Path, log: Any) -> dict:
    cap = min(step.share * budget_s, remaining)
    if cap < 1.0:
        return dict(name=step.name, status='skipped', seconds=0.0, cap_s=round(max(cap, 0.0), 1), reason='budget spent')
    click.echo(f'[gpu_check] {step.name}: cap {cap:.0f} s', err=True)
    done = run_step(step, cap, work, log)
    click.echo(f'[gpu_check] {step.name}: {done["status"]} in {done["seconds"]:.0f} s', err=True)
    return done


def run_check(steps: Sequence[Step], out: Path, budget_s: float, work: Path, header: dict) -> dict:
    """Run ``steps`` in order under one budget; rewrites ``out/gpu_check.json`` after each; returns the record."""
    from .gpu_tables import render

    out.mkdir(parents=True, exist_ok=True)
    record = dict(header, budget_s=budget_s, arch=os.environ.get('TORCH_CUDA_ARCH_LIST'),
                  started=time.strftime('%Y-%m-%d %H:%M:%S %Z'), steps=[])
    start = time.monotonic()
    try:
        with open(out / 'gpu_check.log', 'w', encoding='utf-8') as log:
            for step in steps:
                record['steps'].append(_run_or_skip(step, budget_s - (time.monotonic() - start), budget_s, work, log))
                record['total_s'] = round(time.monotonic() - start, 1)
                write_text_atomic(out / 'gpu_check.json', json.dumps(record, indent=1, default=str))
    finally:  # also when the lease's SIGTERM ends the check: the tables of what was measured
        (out / 'gpu_check.md').write_text(render(record))
    return record


def _arch(device: str, arch: Optional[str]) -> str:
    if arch or os.environ.get('TORCH_CUDA_ARCH_LIST'):
        return arch or os.environ['TORCH_CUDA_ARCH_LIST']
    if device == 'cuda':
        major, minor = torch.cuda.get_device_capability()
        return f'{major}.{minor}'
    return '9.0'  # the lent GPUs' (H100, H200): a CPU run compiles what the GPU run will


@click.command(help=__doc__, context_settings={'max_content_width': 120})
@click.option('--out', type=click.Path(file_okay=False, path_type=Path), required=True,
              help='Folder for gpu_check.json, gpu_check.md and gpu_check.log.')
@click.option('--budget-s', type=click.FloatRange(min=1), default=480, show_default=True,
              help='Seconds for all steps together; each step gets its share (build 30%, tests 12%, ops 13%, '
                   'networks 20%, train 25%) or what is left.')
@click.option('--device', type=click.Choice(['auto', 'cuda', 'cpu']), default='auto', show_default=True,
              help='cuda: the GPU check; cpu: the same steps with their CPU fallbacks.')
@click.option('--arch', default=None,
              help='TORCH_CUDA_ARCH_LIST for every step.  [default: $TORCH_CUDA_ARCH_LIST, else the visible GPU\'s, '
                   'else 9.0]')
@click.option('--steps', 'only', default=','.join(SHARES), show_default=True, help='Comma list of steps to run.')
@click.option('--upstream', type=click.Path(exists=True, file_okay=False), default=None,
              help='A patched upstream StyleGAN-XL checkout (carried with the tree) for bench.networks.')
@click.option('--dry-run', is_flag=True, help='Print the plan with each step\'s cap and exit.')
def main(out: Path, budget_s: float, device: str, arch: Optional[str], only: str, upstream: Optional[str],
         dry_run: bool) -> None:
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.ClickException('--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu')
    # A lease's end sends SIGTERM: exit so the step's finally stops its children. Restored on return, so a caller's
    # process (and the processes it forks later) keeps its own handler.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        _check(out, budget_s, device, arch, only, upstream, dry_run)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check(out: Path, budget_s: float, device: str, arch: Optional[str], only: str, upstream: Optional[str],
           dry_run: bool) -> None:
    names = [s.strip() for s in only.split(',') if s.strip()]
    unknown = sorted(set(names) - set(SHARES))
    if unknown:
        raise click.BadParameter(f'unknown steps {unknown}; known: {", ".join(SHARES)}', param_hint='--steps')
    out = out.resolve()
    work = out / '.work' if dry_run else Path(tempfile.mkdtemp(prefix='gpu_check_'))
    os.environ['TORCH_CUDA_ARCH_LIST'] = arch = _arch(device, arch)  # one op cache for the build and every later step
    steps = [s for s in plan(device, work, upstream) if s.name in names]
    if dry_run:
        click.echo(f'device {device}, budget {budget_s:.0f} s, TORCH_CUDA_ARCH_LIST={arch}')
        for s in steps:
            how = 'in parallel: ' if len(s.commands) > 1 else ''
            click.echo(f'{s.name:<9} cap {s.share * budget_s:4.0f} s  {how}' + ' | '.join(' '.join(c[1:])
                                                                                   for c in s.commands))
        return
    try:
        record = run_check(steps, out, budget_s, work, dict(device=device, machine=machine_info()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    click.echo((out / 'gpu_check.md').read_text())
    click.echo(f'total {record["total_s"]:.0f} s of a {budget_s:.0f} s budget; wrote {out}/gpu_check.{{json,md,log}}')


if __name__ == '__main__':
    main()
