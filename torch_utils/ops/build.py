"""``python -m torch_utils.ops.build``: build every CUDA op now and print what was built for which architectures.

Builds just in time with ninja into the extension cache (or finds the prebuilt modules of ``setup.py``), so the
first training step does not pay for it. Honours ``TORCH_CUDA_ARCH_LIST`` (for example ``8.0;9.0``) and ``CUDA_HOME``.
Exit status 1 when any op failed to build.
"""

from __future__ import annotations

import json
import os
import sys
import time

import click

from .loader import OP_SOURCES, load_op, op_status


def _arch_list() -> str:
    env = os.environ.get('TORCH_CUDA_ARCH_LIST')
    if env:
        return env
    import torch

    if torch.cuda.is_available():
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        return ';'.join(f'{major}.{minor}' for major, minor in caps) + ' (visible GPUs)'
    return "PyTorch's default list (no GPU visible; set TORCH_CUDA_ARCH_LIST to build fewer)"


@click.command(help=__doc__)
@click.option('--ops', default=','.join(OP_SOURCES), show_default=True, help='Comma-separated ops to build.')
@click.option('--verbose', is_flag=True, help='Show the compiler output.')
@click.option('--json-out', type=click.Path(dir_okay=False), default=None, help='Also write the results as JSON.')
def main(ops: str, verbose: bool, json_out: str | None) -> None:
    names = [n.strip() for n in ops.split(',') if n.strip()]
    unknown = sorted(set(names) - set(OP_SOURCES))
    if unknown:
        raise click.BadParameter(f'unknown ops {unknown}; known: {", ".join(OP_SOURCES)}', param_hint='--ops')
    os.environ.setdefault('SAN_EXT_CUDA', 'auto')
    arch = _arch_list()
    rows = []
    for name in names:
        start = time.perf_counter()
        load_op(name, verbose=verbose)
        build = op_status()[name]
        seconds = round(time.perf_counter() - start, 1)
        rows.append(dict(op=name, built=build.loaded, how=build.how or '-', seconds=seconds, path=build.path,
                         reason=build.reason if not build.loaded else ''))
    click.echo(f'architectures: {arch}')
    click.echo(f'{"op":<20}{"built":<8}{"how":<10}{"seconds":>8}  path / reason')
    for r in rows:
        click.echo(f'{r["op"]:<20}{str(r["built"]):<8}{r["how"]:<10}{r["seconds"]:>8}  {r["path"] or r["reason"]}')
    if json_out:
        with open(json_out, 'w') as fh:
            json.dump(dict(architectures=arch, ops=rows), fh, indent=2)
    sys.exit(0 if all(r['built'] for r in rows) else 1)


if __name__ == '__main__':
    main()
