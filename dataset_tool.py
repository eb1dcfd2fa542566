"""``python dataset_tool.py``: convert images to StyleGAN's dataset format (see ``--help``); logic in san_ext.data."""

from __future__ import annotations

import logging
import re
from typing import Optional

import click

from san_ext.data import TRANSFORMS, ConvertConfig, DatasetError, convert_dataset


class _Resolution(click.ParamType):
    """A power-of-two side in pixels: ``256`` or ``256x256``."""

    name = 'R'

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int):
            return value
        m = re.fullmatch(r'(\d+)(?:x(\d+))?', str(value).strip())
        side = int(m.group(1)) if m else 0
        if not m or (m.group(2) and int(m.group(2)) != side) or side < 2 or side & (side - 1):
            self.fail(f'must be a square power of two such as 64, 256 or 256x256 (got {value!r})', param, ctx)
        return side


@click.command(context_settings=dict(help_option_names=['-h', '--help'], max_content_width=120))
# What to convert
@click.option('--source', required=True, metavar='SRC',
              help='Image folder (recursive) or .zip, ImageNet train/ folder, cifar-10-python.tar.gz, a folder '
                   'with MNIST train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz], builtin:digits, or '
                   'builtin:stacked-digits (128,000 RGB images of three digits, labels = mode ids 0-999).')
@click.option('--dest', required=True, metavar='DEST', help='Output .zip file, or a folder.')
@click.option('--max-images', type=click.IntRange(min=1), default=None,
              help='Convert only the first N images (sorted order).  [default: all]')
# How to reshape images
@click.option('--resolution', type=_Resolution(), default=None,
              help='Output side in pixels, a power of two.  [default: the cropped size of the first image; '
                   'builtin:* 16; MNIST 32]')
@click.option('--transform', type=click.Choice(TRANSFORMS), default='center-crop', show_default=True,
              help='Crop to a square before resizing with LANCZOS: centred square, centred 2:1 box letterboxed '
                   'into a square, or none (images must be square).')
@click.option('--channels', type=click.Choice(['1', '3']), default=None,
              help='Output grey (1) or RGB (3); transparency is composited on white.  [default: 3; MNIST 1]')
# Labels
@click.option('--labels-from-folders', is_flag=True,
              help='Class id = index of the top-level sub-folder (sorted names); stored in dataset.json.')
@click.option('--imagenet', is_flag=True,
              help='Read SRC as an ImageNet train/ tree: synset folders (n01440764, ...) -> sorted class ids. '
                   'Auto-detected when all sub-folders look like synsets.')
# Output
@click.option('--compress-level', type=click.IntRange(0, 9), default=0, show_default=True,
              help='PNG zlib level: 0 is fastest to read and largest (as StyleGAN), 9 smallest.')
@click.option('--workers', type=click.IntRange(min=1), default=1, show_default=True,
              help='Processes decoding, resizing and encoding images.')
@click.option('--force', is_flag=True, help='Overwrite DEST if it exists.')
def main(source: str, dest: str, max_images: Optional[int], resolution: Optional[int], transform: str,
         channels: Optional[str], labels_from_folders: bool, imagenet: bool, compress_level: int, workers: int,
         force: bool) -> None:
    """Convert images to StyleGAN's dataset format: square power-of-two PNGs as NNNNN/imgNNNNNNNN.png plus
    dataset.json ({"labels": [[name, class], ...]} or null), in a zip or folder. The output appears only when
    the whole conversion succeeded. Labels come from a dataset.json in SRC (keys: paths relative to SRC), from
    sub-folders (--labels-from-folders, ImageNet), or with the data (CIFAR-10, MNIST, builtin:digits,
    builtin:stacked-digits).

    \b
    Examples:
      python dataset_tool.py --source builtin:digits --dest digits16.zip --resolution 16
      python dataset_tool.py --source builtin:stacked-digits --dest stacked16.zip --resolution 16
      python dataset_tool.py --source ~/cifar-10-python.tar.gz --dest cifar10-32.zip
      python dataset_tool.py --source ~/mnist --dest mnist32.zip
      python dataset_tool.py --source ~/imagenet/train --dest imagenet256.zip --resolution 256 --workers 16
      python dataset_tool.py --source ~/photos --dest photos128.zip --resolution 128 --labels-from-folders
    """
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    cfg = ConvertConfig(source=source, dest=dest, resolution=resolution, transform=transform, max_images=max_images,
                        labels_from_folders=labels_from_folders, imagenet=imagenet,
                        channels=None if channels is None else int(channels), workers=workers,
                        compress_level=compress_level, force=force)
    try:
        result = convert_dataset(cfg)
    except DatasetError as err:
        raise click.ClickException(str(err)) from err
    classes = f'{result.num_classes} classes' if result.num_classes else 'no labels'
    click.echo(f'Wrote {result.num_images} images ({result.resolution}x{result.resolution}, {result.channels} '
               f'channel(s), {classes}) from {result.kind} source to {result.dest}')


if __name__ == '__main__':
    main()
