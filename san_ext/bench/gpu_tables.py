"""``python -m san_ext.bench.gpu_tables DIR/gpu_check.json [--readme README.md]``: the GPU check as README tables.

Renders the record that ``san_ext.bench.gpu_check`` writes (machine, each step's status, and the tables of
``bench.ops``, ``bench.networks`` and ``bench.train`` through their own ``format_table``), so no number is copied by
hand. ``--readme`` replaces the text between ``<!-- gpu-check:begin -->`` and ``<!-- gpu-check:end -->``.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import click

__all__ = ['render', 'machine_line', 'replace_block', 'BEGIN', 'END', 'main']

BEGIN, END = '<!-- gpu-check:begin -->', '<!-- gpu-check:end -->'


def machine_line(record: dict) -> str:
    """Which machine gave the figures: GPU (or CPU), driver, torch, CUDA, Python, date."""
    m = record.get('machine', {})
    where = m.get('gpu') or f'CPU only ({m.get("cpus")} cores)'
    parts = [where, f'driver {m["driver"]}' if m.get('driver') else None, f'torch {m.get("torch")}',
             f'CUDA {m.get("cuda")}' if m.get('cuda') else None, f'Python {m.get("python")}', record.get('started')]
    return ', '.join(p for p in parts if p)


def _status_table(record: dict) -> str:
    lines = ['| step | status | seconds | cap s |', '|---|---|---:|---:|']
    for s in record['steps']:
        lines.append(f'| {s["name"]} | {s["status"]} | {s["seconds"]:.0f} | {s["cap_s"]:.0f} |')
    return '\n'.join(lines)


def _build_line(step: dict) -> str:
    rows = [r for res in (step.get('results') or {}).values() if res for r in res.get('ops', [])]
    if not rows:
        return ''
    arch = next(iter(step['results'].values()), {}) or {}
    built = ', '.join(f'{r["op"]} {"built" if r["built"] else "FAILED"} ({r["seconds"]} s)' for r in rows)
    return f'Build for {arch.get("architectures", "?")}: {built}.'


def _tests_line(step: dict) -> str:
    counts = (step.get('results') or {}).get('pytest_cuda.xml')
    if not counts:
        return ''
    passed = counts['tests'] - counts['failures'] - counts['errors'] - counts['skipped']
    return (f'`pytest -m cuda`: {passed} passed, {counts["failures"]} failed, {counts["errors"]} errors, '
            f'{counts["skipped"]} skipped.')


def _bench_tables(step: dict) -> str:
    res = next(iter((step.get('results') or {}).values()), None)
    if not res or 'rows' not in res:
        return ''
    module = importlib.import_module(f'san_ext.bench.{step["name"]}')  # ops, networks or train: its own table
    return module.format_table(res if step['name'] == 'ops' else res['rows'])


def render(record: dict) -> str:
    """The whole record as Markdown: machine, step status, then every step's figures."""
    parts = [f'GPU check on {machine_line(record)} (total {record.get("total_s", 0):.0f} s of a '
             f'{record.get("budget_s", 0):.0f} s budget).', _status_table(record)]
    for step in record['steps']:
        if step['status'] == 'skipped':
            continue
        text = {'build': _build_line, 'tests': _tests_line}.get(step['name'], _bench_tables)(step)
        if text:
            parts.append(f'**{step["name"]}**' + ('' if step['status'] == 'ok' else f' ({step["status"]})') +
                         f'\n\n{text}')
        elif step['status'] != 'ok':
            parts.append(f'**{step["name"]}** ({step["status"]}): no figures; log tail in gpu_check.json.')
    return '\n\n'.join(parts) + '\n'


def replace_block(text: str, block: str) -> str:
    """``text`` with the part between the gpu-check markers replaced by ``block`` (markers kept)."""
    pattern = re.compile(re.escape(BEGIN) + r'.*?' + re.escape(END), flags=re.S)
    if not pattern.search(text):
        raise ValueError(f'no {BEGIN} ... {END} block to replace')
    return pattern.sub(lambda _: f'{BEGIN}\n{block.rstrip()}\n{END}', text, count=1)


@click.command(help=__doc__)
@click.argument('record', type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option('--readme', type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help='Write the tables into this file between the gpu-check markers.')
def main(record: Path, readme: Path | None) -> None:
    import json

    text = render(json.loads(record.read_text()))
    if readme is None:
        click.echo(text)
        return
    try:
        readme.write_text(replace_block(readme.read_text(), text))
    except ValueError as err:
        raise click.ClickException(f'{readme}: {err}; add the two marker lines where the tables belong') from err
    click.echo(f'wrote the GPU tables into {readme}')


if __name__ == '__main__':
    main()
