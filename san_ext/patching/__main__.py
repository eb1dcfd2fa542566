"""``python -m san_ext.patching``: the ``san-patch`` command."""

from .cli import main

if __name__ == '__main__':
    main(prog_name='san-patch')
