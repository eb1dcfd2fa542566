"""Moved to :mod:`san_ext.studies.toy`; this alias (import or ``python -m``) stays for one release."""

from ._alias import alias

alias(__name__, 'toy')
