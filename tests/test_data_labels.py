"""Class labels of san_ext.data and dataset_tool.py: bad class ids rejected naming dataset.json, Windows separators
mapped to zip paths, the class count the converter reports equal to the reader's, sparse ids warned about; and two
source problems said plainly: a truncated zip, and images that get upscaled.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner
from scripts import load_script  # tests/scripts.py

from san_ext.data import ConvertConfig, DatasetError, ImageDataset, convert_dataset


@pytest.fixture(scope='module')
def tool():
    return load_script('dataset_tool').main


def run_tool(tool, *args, ok=True):
    result = CliRunner().invoke(tool, [str(a) for a in args])
    assert (result.exit_code == 0) == ok, result.output
    return result


def png(side: int = 8, seed: int = 0, wide: int = 0) -> bytes:
    array = np.random.default_rng(seed).integers(0, 256, (side, wide or side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PIL.Image.fromarray(array).save(buf, format='PNG')
    return buf.getvalue()


def labelled_zip(path: Path, labels, names: list[str] | None = None) -> Path:
    """A dataset zip with one 8x8 image per entry of ``names`` and ``{"labels": labels}`` as dataset.json."""
    names = names or [f'00000/img{i:08d}.png' for i in range(len(labels))]
    with zipfile.ZipFile(path, 'w') as zf:
        for i, name in enumerate(names):
            zf.writestr(name, png(seed=i))
        zf.writestr('dataset.json', json.dumps({'labels': labels}))
    return path


def labelled_folder(root: Path, labels: dict, write_json: bool = True) -> Path:
    """A source folder: ``{relative name: class}`` images (8x8) and their dataset.json (names written as given)."""
    root.mkdir(parents=True)
    for i, name in enumerate(labels):
        path = root / name.replace('\\', '/')
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(seed=i))
    if write_json:
        (root / 'dataset.json').write_text(json.dumps({'labels': [[k, v] for k, v in labels.items()]}))
    return root


# -- class ids ---------------------------------------------------------------------------------------------------------
BAD_IDS = [-1, -2 ** 40, 1.5, 2.0, '3', None, True, [1], 2 ** 31, 10 ** 30]


@pytest.mark.parametrize('bad', BAD_IDS, ids=repr)
def test_reader_rejects_a_bad_class_id_naming_dataset_json(tmp_path, bad):
    names = ['00000/img00000000.png', '00000/img00000001.png']
    path = labelled_zip(tmp_path / 'd.zip', [[names[0], 0], [names[1], bad]])
    with pytest.raises(DatasetError, match=r'd\.zip:dataset\.json: bad label entry .*integer class id in 0\.\.'):
        ImageDataset(path, use_labels=True)


@pytest.mark.parametrize('bad', BAD_IDS[:4], ids=repr)
def test_converter_rejects_a_bad_class_id_naming_dataset_json(tmp_path, tool, bad):
    src = labelled_folder(tmp_path / 'src', {'a.png': 0, 'b.png': bad})
    result = run_tool(tool, '--source', src, '--dest', tmp_path / 'o.zip', ok=False)
    assert f'{src / "dataset.json"}: bad label entry' in result.output and not (tmp_path / 'o.zip').exists()


def test_labels_that_are_not_a_list_are_named(tmp_path):
    path = labelled_zip(tmp_path / 'd.zip', {'00000/img00000000.png': 0}, ['00000/img00000000.png'])
    with pytest.raises(DatasetError, match=r'dataset\.json: "labels" is a dict'):
        ImageDataset(path, use_labels=True)


# -- Windows separators ------------------------------------------------------------------------------------------------
def test_backslashes_in_dataset_json_name_zip_members(tmp_path):
    names = ['00000/img00000000.png', '00000/img00000001.png', '00001/sub/img00000002.png']
    labels = [[n.replace('/', '\\'), c] for n, c in zip(names, (2, 0, 1))]
    ds = ImageDataset(labelled_zip(tmp_path / 'd.zip', labels, names), use_labels=True)
    assert ds.label_dim == 3
    assert [int(ds.get_label(i).argmax()) for i in range(3)] == [2, 0, 1]


def test_converter_maps_backslashes_of_a_source_dataset_json(tmp_path, tool):
    src = labelled_folder(tmp_path / 'src', {'cats\\a.png': 1, 'dogs\\b.png': 0, 'dogs\\deep\\c.png': 2})
    run_tool(tool, '--source', src, '--dest', tmp_path / 'o.zip')
    ds = ImageDataset(tmp_path / 'o.zip', use_labels=True)
    assert [int(ds.get_label(i).argmax()) for i in range(3)] == [1, 0, 2]  # sorted: cats/a, dogs/b, dogs/deep/c


def test_one_image_labelled_twice_differently_is_an_error(tmp_path):
    name = '00000/img00000000.png'
    path = labelled_zip(tmp_path / 'd.zip', [[name, 0], [name.replace('/', '\\'), 1]], [name])
    with pytest.raises(DatasetError, match=r"dataset\.json labels '00000/img00000000\.png' twice, as class 0 and as "
                                           r'class 1'):
        ImageDataset(path, use_labels=True)


# -- the class count the converter reports -----------------------------------------------------------------------------
def cifar10(path: Path) -> Path:
    rng = np.random.default_rng(0)
    with tarfile.open(path, 'w:gz') as tar:
        for i in range(1, 6):
            data = pickle.dumps({b'data': rng.integers(0, 256, (2, 3072), dtype=np.uint8),
                                 b'labels': [3, 7] if i < 5 else [1, 2]}, protocol=2)
            info = tarfile.TarInfo(f'cifar-10-batches-py/data_batch_{i}')
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def mnist(root: Path) -> Path:
    root.mkdir()
    for name, magic, array in (('train-images-idx3-ubyte.gz', 0x803, np.zeros((3, 28, 28), np.uint8)),
                               ('train-labels-idx1-ubyte.gz', 0x801, np.array([4, 0, 8], np.uint8))):
        raw = struct.pack('>I', magic) + struct.pack(f'>{array.ndim}I', *array.shape) + array.tobytes()
        (root / name).write_bytes(gzip.compress(raw))
    return root


SOURCES = {  # name -> (make source in tmp_path, extra ConvertConfig fields, the class count of its labels)
    'dataset.json with a gap': (lambda t: labelled_folder(t / 's', {'a.png': 0, 'b.png': 3, 'c.png': 2}), {}, 4),
    'labels from folders': (lambda t: labelled_folder(t / 's', dict.fromkeys(('x/a.png', 'y/b.png', 'z/c.png'), 0),
                                                      write_json=False), {'labels_from_folders': True}, 3),
    'zip with dataset.json': (lambda t: labelled_zip(t / 's.zip', [[f'00000/img{i:08d}.png', c] for i, c in
                                                                  enumerate((5, 1))]), {}, 6),
    'cifar10': (lambda t: cifar10(t / 'cifar-10-python.tar.gz'), {}, 8),
    'cifar10, first 4 images': (lambda t: cifar10(t / 'cifar-10-python.tar.gz'), {'max_images': 4}, 8),
    'mnist': (lambda t: mnist(t / 'mnist'), {}, 9),
    'builtin digits, first 12': (lambda t: 'builtin:digits', {'max_images': 12, 'resolution': 8}, 10),
}


@pytest.mark.parametrize('name', SOURCES)
def test_converter_reports_the_class_count_of_the_labels_it_wrote(tmp_path, name):
    make, extra, expected = SOURCES[name]
    cfg = ConvertConfig(source=str(make(tmp_path)), dest=str(tmp_path / 'o.zip'), **extra)
    result = convert_dataset(cfg, progress=False)
    ds = ImageDataset(tmp_path / 'o.zip', use_labels=True)
    assert result.num_classes == ds.label_dim == expected


def test_dataset_tool_prints_the_class_count_of_the_labels_it_wrote(tmp_path, tool):
    src = labelled_folder(tmp_path / 's', {'a.png': 0, 'b.png': 3, 'c.png': 2})
    out = run_tool(tool, '--source', src, '--dest', tmp_path / 'o.zip').output
    assert f'{ImageDataset(tmp_path / "o.zip", use_labels=True).label_dim} classes' in out and '4 classes' in out


# -- sparse class ids --------------------------------------------------------------------------------------------------
def test_sparse_class_ids_are_warned_about_by_reader_and_converter(tmp_path, caplog):
    src = labelled_folder(tmp_path / 's', {'a.png': 0, 'b.png': 10 ** 7})
    with caplog.at_level(logging.WARNING, logger='san_ext.data'):
        result = convert_dataset(ConvertConfig(source=str(src), dest=str(tmp_path / 'o.zip')), progress=False)
        ds = ImageDataset(tmp_path / 'o.zip', use_labels=True)
    assert result.num_classes == ds.label_dim == 10 ** 7 + 1  # StyleGAN's max + 1, kept; but said out loud
    warned = [r.getMessage() for r in caplog.records if 'class ids go up to 10000000' in r.getMessage()]
    assert len(warned) == 2 and all('only 2 distinct classes' in w for w in warned)
    assert str(src) in warned[0] and 'o.zip:dataset.json' in warned[1]


def test_dense_class_ids_are_not_warned_about(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger='san_ext.data'):
        ImageDataset(labelled_zip(tmp_path / 'd.zip', [[f'00000/img{i:08d}.png', c] for i, c in
                                                       enumerate((0, 1, 3))]), use_labels=True)
    assert not [r for r in caplog.records if 'class ids' in r.getMessage()]


# -- a truncated zip ---------------------------------------------------------------------------------------------------
@pytest.fixture
def truncated_zip(tmp_path) -> Path:
    path = labelled_zip(tmp_path / 'good.zip', [['00000/img00000000.png', 0], ['00000/img00000001.png', 1]])
    data = path.read_bytes()
    (tmp_path / 'cut.zip').write_bytes(data[:len(data) // 2])  # as a download cut short
    return tmp_path / 'cut.zip'


def test_reader_says_a_truncated_zip_is_truncated(truncated_zip):
    with pytest.raises(DatasetError, match=r'cut\.zip starts like a zip archive but has no readable central '
                                           r'directory .*truncated or corrupt'):
        ImageDataset(truncated_zip)


def test_converter_says_a_truncated_zip_source_is_truncated(tmp_path, tool, truncated_zip):
    out = run_tool(tool, '--source', truncated_zip, '--dest', tmp_path / 'o.zip', ok=False).output
    assert 'truncated or corrupt' in out and str(truncated_zip) in out and 'unknown source kind' not in out


def test_an_empty_file_named_zip_is_called_damaged_and_other_files_unknown(tmp_path, tool):
    (tmp_path / 'empty.zip').write_bytes(b'')
    with pytest.raises(DatasetError, match=r'empty\.zip is named \.zip but .*truncated or corrupt \(0 bytes\)'):
        ImageDataset(tmp_path / 'empty.zip')
    (tmp_path / 'notes.bin').write_bytes(b'hello')
    with pytest.raises(DatasetError, match='neither a folder nor a zip archive'):
        ImageDataset(tmp_path / 'notes.bin')


# -- upscaled images ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('transform', ['center-crop', 'none', 'center-crop-wide'])
def test_converter_warns_when_it_upscales_a_tiny_image(tmp_path, caplog, transform):
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'big.png').write_bytes(png(16, wide=32 if transform == 'center-crop-wide' else 0))
    (src / 'tiny.png').write_bytes(png(1))
    with caplog.at_level(logging.WARNING, logger='san_ext.data'):
        convert_dataset(ConvertConfig(source=str(src), dest=str(tmp_path / 'o.zip'), resolution=8,
                                      transform=transform), progress=False)
    warned = [r.getMessage() for r in caplog.records if 'upscaled' in r.getMessage()]
    assert len(warned) == 1 and '1 of 2 images were smaller than 8x8' in warned[0] and 'tiny.png, is 1x1' in warned[0]


def test_converter_is_quiet_when_nothing_is_upscaled(tmp_path, caplog):
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'a.png').write_bytes(png(16))
    with caplog.at_level(logging.WARNING, logger='san_ext.data'):
        convert_dataset(ConvertConfig(source=str(src), dest=str(tmp_path / 'o.zip'), resolution=8), progress=False)
    assert not [r for r in caplog.records if 'upscaled' in r.getMessage()]
