"""``san_ext.data.storage``: dataset.json's label table and the damaged-zip check, down to the exact messages.

Written against mutmut's survivors in ``storage.py``; each test names the planted bug it failed on.
"""

import io
import json

import pytest

from san_ext.data import storage
from san_ext.data.storage import MAX_CLASS_ID, DatasetError, Storage, damaged_zip_message, read_label_table


def _table(tmp_path, meta) -> Storage:
    (tmp_path / 'dataset.json').write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return Storage(tmp_path)


def _error(tmp_path, meta) -> str:
    with pytest.raises(DatasetError) as info:
        read_label_table(_table(tmp_path, meta))
    return str(info.value)


def test_largest_class_id_is_accepted_and_one_more_refused(tmp_path):
    """Ids run 0..MAX_CLASS_ID inclusive (planted: `< MAX_CLASS_ID`)."""
    assert read_label_table(_table(tmp_path, {'labels': [['a.png', MAX_CLASS_ID]]})) == {'a.png': MAX_CLASS_ID}
    assert 'bad label entry ["a.png", 2147483648]' in _error(tmp_path, {'labels': [['a.png', MAX_CLASS_ID + 1]]})


@pytest.mark.parametrize('entry', [[3, 1], ['a.png', 1, 2], ['a.png'], 'a.png'],
                         ids=['name not a string', 'three items', 'one item', 'not a pair'])
def test_entries_that_are_not_name_id_pairs_are_refused_naming_the_entry(tmp_path, entry):
    """Planted: `and` -> `or` in the pair check lets [3, 1] through to a crash and a triple through silently."""
    assert _error(tmp_path, {'labels': [entry]}) == (
        f'{tmp_path / "dataset.json"}: bad label entry {json.dumps(entry)}; expected ["path/in/dataset.png", '
        f'class_id] with an integer class id in 0..{MAX_CLASS_ID}')


def test_a_long_bad_entry_is_shown_cut_at_200_characters(tmp_path):
    entry = ['x' * 300 + '.png', -1]
    message = _error(tmp_path, {'labels': [entry]})
    assert f'bad label entry {json.dumps(entry)[:200]}; expected' in message  # planted: [:201] or dumps(None)


def test_invalid_json_and_non_list_labels_say_what_to_do(tmp_path):
    invalid = _error(tmp_path, '{"labels": [')
    assert invalid.startswith(f'{tmp_path / "dataset.json"} is not valid JSON (') and \
        invalid.endswith('); fix it or delete it')
    assert _error(tmp_path, {'labels': {'a.png': 1}}) == (
        f'{tmp_path / "dataset.json"}: "labels" is a dict; expected a list of ["path/in/dataset.png", class_id] '
        'pairs or null')


def test_an_image_labelled_twice_names_both_classes_and_the_separator_rule(tmp_path):
    assert _error(tmp_path, {'labels': [['d/a.png', 1], ['d\\a.png', 2]]}) == (
        f"{tmp_path / 'dataset.json'} labels 'd/a.png' twice, as class 1 and as class 2 (Windows separators count "
        'as "/"); keep one entry per image')


def test_damaged_zip_check_reads_only_the_four_byte_header(tmp_path, monkeypatch):
    """A multi-gigabyte archive must not be read whole to print a message (planted: read(None), read(5))."""
    sizes = []

    class Recording(io.BytesIO):
        def read(self, size=-1):
            sizes.append(size)
            return super().read(size)

    path = tmp_path / 'cut.zip'
    path.write_bytes(b'PK\x03\x04' + b'\0' * 100)
    monkeypatch.setattr(storage, 'open', lambda p, mode: Recording(path.read_bytes()), raising=False)
    assert damaged_zip_message(path).startswith(f'{path} starts like a zip archive but has no readable central')
    assert sizes == [4]


def _zip(path, members):
    import zipfile
    with zipfile.ZipFile(path, 'w') as z:
        for name in members:
            z.writestr(name, b'' if name.endswith('/') else b'x')
    return path


def test_zip_names_leave_out_directories_and_macos_metadata(tmp_path):
    """Planted: `and` -> `or`, a changed '/' or '__MACOSX/' prefix."""
    path = _zip(tmp_path / 'd.zip', ['a/', 'a/x.png', '__MACOSX/', '__MACOSX/a/._x.png', 'b.png', '__macosx.png'])
    assert Storage(path).names() == ['__macosx.png', 'a/x.png', 'b.png']


def test_folder_names_follow_symlinked_folders(tmp_path):
    """Datasets are often assembled from links (planted: followlinks dropped or False)."""
    (tmp_path / 'real').mkdir()
    (tmp_path / 'real' / 'x.png').write_bytes(b'x')
    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / 'linked').symlink_to(tmp_path / 'real', target_is_directory=True)
    assert Storage(tmp_path / 'data').names() == ['linked/x.png']


def test_one_zip_handle_per_process_closed_by_close(tmp_path):
    """Planted: the cached handle never reused (`is not None`, `==` pid, pid None) or close() leaving it open."""
    store = Storage(_zip(tmp_path / 'd.zip', ['a.png']))
    handle = store._zipfile()
    assert store._zipfile() is handle and store.read('a.png') == b'x'
    store.close()
    assert handle.fp is None and store._zip is None


def test_a_forked_child_opens_its_own_zip_handle(tmp_path):
    """An inherited handle shares its file offset with the parent (planted: `or` -> `and` reuses it; close() closing
    a handle another process opened)."""
    import os
    store = Storage(_zip(tmp_path / 'd.zip', ['a.png']))
    parent = store._zipfile()
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only when it got a fresh handle and the parent's stays open
        ok = store._zipfile() is not parent and store.read('a.png') == b'x'
        store.close()
        store._zip, store._zip_pid = parent, os.getppid()  # the inherited state again: close() must not touch it
        store.close()
        os._exit(0 if ok and parent.fp is not None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and parent.fp is not None


def test_a_zip_damaged_after_opening_says_so(tmp_path):
    path = _zip(tmp_path / 'd.zip', ['a.png'])
    store = Storage(path)
    path.write_bytes(b'not a zip any more')
    with pytest.raises(DatasetError) as info:
        store.names()
    assert str(info.value) == (f'cannot open zip archive {path}: File is not a zip file; '
                               f'{storage.CONVERT_HINT}')


def test_class_count_is_max_plus_one_and_warns_only_when_most_ids_are_unused(caplog):
    """Planted: 1 for no ids, `>=` in the sparsity test, a changed number or word in the warning."""
    assert storage.class_count([], 'x') == 0
    assert storage.class_count([0, 3], 'x') == 4 and not caplog.records  # 2 unused of 4: not most
    assert storage.class_count([0, 4], 'ds.json') == 5
    assert caplog.records[-1].getMessage() == (
        'ds.json: class ids go up to 4 but only 2 distinct classes are used, so labels are 5-dimensional one-hot '
        'vectors (and a conditional G and D get 5 class embeddings); renumber the classes 0..1 unless the gaps are '
        'intended')
