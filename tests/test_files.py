"""san_ext.files: a file's SHA-256 and atomic writes that leave the old file or the new one, never half of one."""

from __future__ import annotations

import hashlib
import os

import pytest

from san_ext import files


def test_file_sha256_is_hashlibs_over_every_chunk(tmp_path):
    data = os.urandom(10_000)
    (tmp_path / 'x.bin').write_bytes(data)
    assert files.file_sha256(tmp_path / 'x.bin', chunk=999) == hashlib.sha256(data).hexdigest()


def test_write_atomic_replaces_the_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / 'a.json'
    target.write_text('old')
    assert files.write_text_atomic(target, 'new') == target
    assert target.read_text() == 'new' and sorted(p.name for p in tmp_path.iterdir()) == ['a.json']


@pytest.mark.parametrize('where', ['write', 'rename'])
def test_a_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path, monkeypatch, where):
    target = tmp_path / 'a.json'
    target.write_text('old')

    def write(tmp):
        tmp.write_text('half')
        if where == 'write':
            raise OSError('disk full')

    if where == 'rename':
        monkeypatch.setattr(files.os, 'replace', lambda *a: (_ for _ in ()).throw(OSError('crash')))
    with pytest.raises(OSError):
        files.write_atomic(target, write)
    monkeypatch.undo()
    assert target.read_text() == 'old' and sorted(p.name for p in tmp_path.iterdir()) == ['a.json']
