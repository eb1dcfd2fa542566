"""``python -m san_ext.legacy PKL --out DIR``: convert a released StyleGAN-XL / StyleSAN-XL pickle to a snapshot.

The snapshot (``DIR/NAME.safetensors`` + ``.json``) is what ``--path_stem``, ``gen_images.py`` and
``calc_metrics.py`` read; converting once spares every later start the unpickling and the conversion.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from san_ext.checkpoint import generator_spec, save_snapshot

from . import ConversionError, LegacyPickleError, load


@click.command(context_settings={'help_option_names': ['-h', '--help']})
@click.argument('pkl', type=click.Path(exists=True, dir_okay=False))
@click.option('--out', 'outdir', type=click.Path(file_okay=False), help='Folder for the snapshot (created).')
@click.option('--name', help='Snapshot file name without suffix  [default: the pickle name]')
@click.option('--which', type=click.Choice(['G_ema', 'G']), default='G_ema', show_default=True,
              help='Generator to convert: G_ema (the one to sample from and to grow a stage on) or G.')
@click.option('--check-d', is_flag=True, help='Also convert the discriminator, to check that it maps (not saved).')
@click.option('--no-strict', is_flag=True, help='Load what maps and list the rest instead of failing.')
@click.option('--dry-run', is_flag=True, help='Convert and print the architecture and report; write nothing.')
def main(pkl: str, outdir: Optional[str], name: Optional[str], which: str, check_d: bool, no_strict: bool,
         dry_run: bool) -> None:
    """Convert PKL (e.g. StyleGAN-XL's imagenet128.pkl) into a san-ext network snapshot, without running any code
    from the pickle.

    \b
    Examples:
      python -m san_ext.legacy imagenet128.pkl --out stems
      python train.py ... --superres --up_factor 2 --path_stem stems/imagenet128.safetensors
      python -m san_ext.legacy stylesan-xl_cifar10.pkl --dry-run --check-d
    """
    if not dry_run and not outdir:
        raise click.UsageError('pass --out DIR (or --dry-run to only check the conversion)')
    components = (which, 'D') if check_d else (which,)
    try:
        nets = load(pkl, components, strict=not no_strict)
    except (LegacyPickleError, ConversionError) as e:
        raise click.ClickException(str(e)) from e
    G = getattr(nets, which)
    click.echo(f'{pkl}: {nets.meta["kind"]}, {which} at {G.img_resolution}px, '
               f'{sum(p.numel() for p in G.parameters()) / 1e6:.2f}M parameters')
    click.echo(json.dumps(generator_spec(G), indent=1))
    for report in nets.meta['reports'].values():
        click.echo(f'{report["component"]}: {report["mapped"]} tensors mapped, {len(report["dropped"])} dropped, '
                   f'{len(report["missing"])} not filled, {len(report["unexpected"])} not used')
        for line in report['rewritten'] + report['warnings']:
            click.echo(f'  {line}')
    if dry_run:
        return
    progress = nets.meta.get('progress') or {}
    cur_nimg = progress.get('cur_nimg', [0])
    cur_nimg = int(cur_nimg[0] if isinstance(cur_nimg, list) else cur_nimg)
    extra = {'legacy_source': nets.meta['source'], 'legacy_sha256': nets.meta['sha256'],
             'legacy_kind': nets.meta['kind'], 'legacy_which': which, 'legacy_report': nets.meta['reports'][which]}
    path = save_snapshot(outdir, G, config=None, cur_nimg=cur_nimg, name=name or Path(pkl).stem, extra=extra)
    click.echo(f'wrote {path} and {path.with_suffix(".json").name}')


if __name__ == '__main__':
    main()
