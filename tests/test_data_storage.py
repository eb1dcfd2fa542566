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
