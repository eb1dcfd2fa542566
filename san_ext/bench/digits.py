"""Moved to :mod:`san_ext.studies.digits`; this alias (import or ``python -m``) stays for one release."""

from ._alias import alias

alias(__name__, 'digits')
