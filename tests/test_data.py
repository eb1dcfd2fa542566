"""san_ext.data and dataset_tool.py: round trips through the converters, the reader's items and errors."""

import gzip
import importlib.util
import io
import json
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

from san_ext.data import (
    ConvertConfig,
    DatasetError,
    ImageDataset,
    InfiniteBatchSampler,
    convert_dataset,
    make_digits_dataset,
    open_dataset,
)
from san_ext.data.converters import transform_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def tool():
    """dataset_tool.py's click command, loaded from the repository root."""
    spec = importlib.util.spec_from_file_location('dataset_tool', ROOT / 'dataset_tool.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def run_tool(tool, *args, ok=True):
    result = CliRunner().invoke(tool, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code != 0, result.output
    return result


def png_bytes(array):
    buf = io.BytesIO()
    PIL.Image.fromarray(array).save(buf, format='PNG')
    return buf.getvalue()


def random_images(n, shape=(8, 8, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def write_folder(root, images, labels=None):
    """``images``: {relative name: uint8 array}; ``labels``: {relative name: class} written as dataset.json."""
    root.mkdir(parents=True, exist_ok=True)
    for name, array in images.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(array).save(root / name)
    if labels is not None:
        (root / 'dataset.json').write_text(json.dumps({'labels': [[k, v] for k, v in labels.items()]}))
    return root


def write_zip(path, members):
    with zipfile.ZipFile(path, 'w') as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def all_items(ds):
    return [ds[i] for i in range(len(ds))]


@pytest.fixture
def labelled(tmp_path, tool):
    """A 12-image 8x8 RGB source folder with dataset.json labels, converted to zip and folder without resizing."""
    arrays = random_images(12)
    images = {f'img{i:02d}.png': a for i, a in enumerate(arrays)}
    labels = {name: i % 3 for i, name in enumerate(images)}
    src = write_folder(tmp_path / 'src', images, labels)
    run_tool(tool, '--source', src, '--dest', tmp_path / 'out.zip')
    run_tool(tool, '--source', src, '--dest', tmp_path / 'out_dir')
    return dict(arrays=arrays, labels=np.array(list(labels.values())), zip=tmp_path / 'out.zip',
                dir=tmp_path / 'out_dir')


# -- reader ---------------------------------------------------------------------------------------------------------
def test_folder_round_trip_is_pixel_exact_with_labels(labelled):
    ds = ImageDataset(labelled['zip'], use_labels=True)
    assert (len(ds), ds.resolution, ds.num_channels, ds.label_dim) == (12, 8, 3, 3)
    assert ds.image_shape == (3, 8, 8) and ds.label_shape == (3,) and ds.has_labels and ds.name == 'out'
    for i, (image, label) in enumerate(all_items(ds)):
        assert image.dtype == np.uint8 and label.dtype == np.float32
        np.testing.assert_array_equal(image, labelled['arrays'][i].transpose(2, 0, 1))
        np.testing.assert_array_equal(label, np.eye(3, dtype=np.float32)[labelled['labels'][i]])
        np.testing.assert_array_equal(ds.get_label(i), label)
    with zipfile.ZipFile(labelled['zip']) as zf:
        meta = json.loads(zf.read('dataset.json'))
        assert zf.getinfo('00000/img00000011.png').compress_type == zipfile.ZIP_STORED
    assert meta['labels'][5] == ['00000/img00000005.png', 2]


def test_without_use_labels_items_have_empty_labels(labelled):
    ds = open_dataset(labelled['zip'])
    assert not ds.has_labels and ds.label_dim == 0 and ds.label_shape == (0,)
    assert ds[0][1].shape == (0,) and ds[0][1].dtype == np.float32


def test_zip_and_folder_give_the_same_items(labelled):
    a, b = ImageDataset(labelled['zip'], use_labels=True), ImageDataset(labelled['dir'], use_labels=True)
    assert len(a) == len(b) == 12
    for (xa, ca), (xb, cb) in zip(all_items(a), all_items(b)):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ca, cb)


def test_xflip_doubles_length_and_mirrors(labelled):
    plain, flipped = ImageDataset(labelled['zip'], use_labels=True), ImageDataset(labelled['zip'], use_labels=True,
                                                                                  xflip=True)
    assert len(flipped) == 2 * len(plain)
    for i in range(len(plain)):
        np.testing.assert_array_equal(flipped[i][0], plain[i][0])
        np.testing.assert_array_equal(flipped[i + len(plain)][0], plain[i][0][:, :, ::-1])
        np.testing.assert_array_equal(flipped[i + len(plain)][1], plain[i][1])
    assert flipped[len(plain)][0].flags.c_contiguous


def test_max_size_subset_is_seeded_and_fixed(labelled):
    names = lambda ds: [ds.get_name(i) for i in range(len(ds))]  # noqa: E731
    a, b = ImageDataset(labelled['zip'], max_size=5, random_seed=1), ImageDataset(labelled['zip'], max_size=5,
                                                                                  random_seed=1)
    c = ImageDataset(labelled['zip'], max_size=5, random_seed=2)
    assert len(a) == 5 and names(a) == names(b) == sorted(names(a)) and names(a) != names(c)
    full = ImageDataset(labelled['zip'])
    index = {full.get_name(i): i for i in range(len(full))}
    for i, name in enumerate(names(a)):
        np.testing.assert_array_equal(a[i][0], full[index[name]][0])
    assert len(ImageDataset(labelled['zip'], max_size=100)) == 12
    assert len(ImageDataset(labelled['zip'], max_size=5, xflip=True)) == 10


def test_dataloader_workers_stream_the_zip_like_one_process(labelled):
    ds = ImageDataset(labelled['zip'], use_labels=True, xflip=True)
    ds[0]  # opens the zip here: workers must not reuse this handle
    batches = list(torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2, shuffle=False))
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    assert images.shape == (24, 3, 8, 8) and images.dtype == torch.uint8
    np.testing.assert_array_equal(images.numpy(), np.stack([x for x, _ in all_items(ds)]))
    np.testing.assert_array_equal(labels.numpy(), np.stack([c for _, c in all_items(ds)]))
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._storage._zip is None
    np.testing.assert_array_equal(clone[3][0], ds[3][0])


def test_resolution_argument_must_match(labelled):
    assert ImageDataset(labelled['zip'], resolution=8).resolution == 8
    with pytest.raises(DatasetError, match=r'out\.zip holds 8x8 images but resolution 16.*--resolution 16'):
        ImageDataset(labelled['zip'], resolution=16)


def test_grey_images_have_one_channel(tmp_path):
    arrays = random_images(3, shape=(4, 4))
    write_folder(tmp_path / 'grey', {f'{i}.png': a for i, a in enumerate(arrays)})
    ds = ImageDataset(tmp_path / 'grey')
    assert ds.image_shape == (1, 4, 4)
    np.testing.assert_array_equal(ds[2][0][0], arrays[2])


# -- reader errors --------------------------------------------------------------------------------------------------
def test_missing_path_and_empty_folder_are_named(tmp_path):
    with pytest.raises(DatasetError, match=r'dataset not found: .*nope\.zip.*dataset_tool\.py'):
        ImageDataset(tmp_path / 'nope.zip')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DatasetError, match=r'no images .* in .*empty'):
        ImageDataset(tmp_path / 'empty')


def test_mixed_sizes_name_both_files(tmp_path):
    write_folder(tmp_path / 'mixed', {'a.png': random_images(1, (8, 8, 3))[0],
                                      'b.png': random_images(1, (16, 16, 3))[0]})
    with pytest.raises(DatasetError, match=r'a\.png is 3x8x8 .* b\.png is 3x16x16'):
        ImageDataset(tmp_path / 'mixed')


@pytest.mark.parametrize('shape', [(8, 12, 3), (12, 12, 3)], ids=['non-square', 'non-power-of-two'])
def test_bad_shape_names_file_and_fix(tmp_path, shape):
    write_folder(tmp_path / 'bad', {'x.png': random_images(1, shape)[0]})
    with pytest.raises(DatasetError, match=r'x\.png is \d+x\d+; images must be square with a power-of-two side.*'
                                           r'--resolution 8'):
        ImageDataset(tmp_path / 'bad')


def test_labels_requested_without_labels(tmp_path):
    write_folder(tmp_path / 'unlabelled', {'a.png': random_images(1)[0]})
    with pytest.raises(DatasetError, match=r'--cond needs labels; .*unlabelled has no dataset\.json'):
        ImageDataset(tmp_path / 'unlabelled', use_labels=True)
    (tmp_path / 'unlabelled' / 'dataset.json').write_text('{"labels": null}')
    with pytest.raises(DatasetError, match=r'--cond needs labels; .*dataset\.json has "labels": null'):
        ImageDataset(tmp_path / 'unlabelled', use_labels=True)
    assert not ImageDataset(tmp_path / 'unlabelled').has_labels


def test_label_for_a_missing_file_is_named(tmp_path):
    write_folder(tmp_path / 'd', {'a.png': random_images(1)[0]}, labels={'a.png': 0, 'gone.png': 1})
    with pytest.raises(DatasetError, match=r"dataset\.json labels 'gone\.png'.*not an image in"):
        ImageDataset(tmp_path / 'd', use_labels=True)


def test_corrupt_zip_member_is_named(tmp_path):
    good = png_bytes(random_images(1)[0])
    write_zip(tmp_path / 'garbage.zip', {'a.png': good, 'bad.png': b'not a png at all'})
    with pytest.raises(DatasetError, match=r'cannot decode .*garbage\.zip:bad\.png'):
        ImageDataset(tmp_path / 'garbage.zip')
    write_zip(tmp_path / 'truncated.zip', {'a.png': good, 'cut.png': good[:60]})  # header fine, pixel data cut
    ds = ImageDataset(tmp_path / 'truncated.zip')
    ds[0]
    with pytest.raises(DatasetError, match=r'cannot decode .*truncated\.zip:cut\.png'):
        ds[1]


# -- converters -----------------------------------------------------------------------------------------------------
def fake_cifar10(path, per_batch=4):
    """A tarball with CIFAR-10's layout: cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}."""
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        batches[name] = {b'batch_label': name.encode(), b'labels': rng.integers(0, 10, per_batch).tolist(),
                         b'data': rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                         b'filenames': [b'x.png'] * per_batch}
    meta = {b'label_names': [f'class{i}'.encode() for i in range(10)], b'num_vis': 3072}
    with tarfile.open(path, 'w:gz') as tar:
        for name, obj in [*batches.items(), ('batches.meta', meta)]:
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f'cifar-10-batches-py/{name}')
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return batches


def test_cifar10_tarball_converts_with_labels(tmp_path, tool):
    batches = fake_cifar10(tmp_path / 'cifar-10-python.tar.gz')
    result = run_tool(tool, '--source', tmp_path / 'cifar-10-python.tar.gz', '--dest', tmp_path / 'c.zip')
    assert 'from cifar10 source' in result.output
    ds = ImageDataset(tmp_path / 'c.zip', use_labels=True)
    train = [batches[f'data_batch_{i}'] for i in range(1, 6)]
    data = np.concatenate([b[b'data'] for b in train]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([b[b'labels'] for b in train])
    assert len(ds) == 20 and ds.image_shape == (3, 32, 32)
    for i, (image, label) in enumerate(all_items(ds)):
        np.testing.assert_array_equal(image, data[i])
        assert label.argmax() == labels[i]
    with zipfile.ZipFile(tmp_path / 'c.zip') as zf:
        assert json.loads(zf.read('dataset.json'))['class_names'][3] == 'class3'


def test_cifar10_pickle_that_runs_code_is_refused(tmp_path, tool):
    class Evil:
        def __reduce__(self):
            return (print, ('pwned',))

    with tarfile.open(tmp_path / 'evil.tar.gz', 'w:gz') as tar:
        for i in range(1, 6):
            data = pickle.dumps({b'data': Evil()}, protocol=2)
            info = tarfile.TarInfo(f'cifar-10-batches-py/data_batch_{i}')
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    result = run_tool(tool, '--source', tmp_path / 'evil.tar.gz', '--dest', tmp_path / 'e.zip', ok=False)
    assert 'refusing to load __builtin__.print' in result.output and 'evil.tar.gz' in result.output


def write_idx(path, array, magic, compress):
    data = struct.pack('>I', magic) + struct.pack(f'>{array.ndim}I', *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize('compress', [True, False], ids=['gz', 'raw'])
def test_mnist_idx_files_pad_to_32(tmp_path, tool, compress):
    images, labels = random_images(5, (28, 28)), np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    ext = '.gz' if compress else ''
    (tmp_path / 'mnist').mkdir()
    write_idx(tmp_path / 'mnist' / f'train-images-idx3-ubyte{ext}', images, 0x803, compress)
    write_idx(tmp_path / 'mnist' / f'train-labels-idx1-ubyte{ext}', labels, 0x801, compress)
    run_tool(tool, '--source', tmp_path / 'mnist', '--dest', tmp_path / 'm.zip')
    ds = ImageDataset(tmp_path / 'm.zip', use_labels=True)
    assert len(ds) == 5 and ds.image_shape == (1, 32, 32) and ds.label_dim == 6
    for i, (image, label) in enumerate(all_items(ds)):
        np.testing.assert_array_equal(image[0, 2:30, 2:30], images[i])
        assert image[0, :2].max() == 0 and image[0, :, 30:].max() == 0 and label.argmax() == labels[i]


def test_mnist_bad_magic_names_the_file(tmp_path, tool):
    (tmp_path / 'mnist').mkdir()
    write_idx(tmp_path / 'mnist' / 'train-images-idx3-ubyte', random_images(2, (28, 28)), 0x801, False)
    write_idx(tmp_path / 'mnist' / 'train-labels-idx1-ubyte', np.zeros(2, np.uint8), 0x801, False)
    result = run_tool(tool, '--source', tmp_path / 'mnist', '--dest', tmp_path / 'm.zip', ok=False)
    assert 'train-images-idx3-ubyte is not an MNIST idx file' in result.output


def test_imagenet_tree_maps_sorted_synsets_to_classes(tmp_path, tool):
    rng = np.random.default_rng(1)
    for synset in ['n02000002', 'n01000001']:
        for j in range(2):
            (tmp_path / 'train' / synset).mkdir(parents=True, exist_ok=True)
            PIL.Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(
                tmp_path / 'train' / synset / f'{synset}_{j}.JPEG', format='JPEG')
    result = run_tool(tool, '--source', tmp_path / 'train', '--dest', tmp_path / 'in.zip', '--resolution', 16)
    assert 'from imagenet source' in result.output
    ds = ImageDataset(tmp_path / 'in.zip', use_labels=True)
    assert ds.image_shape == (3, 16, 16) and len(ds) == 4
    assert [ds.get_label(i).argmax() for i in range(4)] == [0, 0, 1, 1]
    with zipfile.ZipFile(tmp_path / 'in.zip') as zf:
        assert json.loads(zf.read('dataset.json'))['class_names'] == ['n01000001', 'n02000002']
    run_tool(tool, '--source', tmp_path / 'in.zip', '--dest', tmp_path / 'in8.zip', '--resolution', 8)  # re-convert
    ds8 = ImageDataset(tmp_path / 'in8.zip', use_labels=True)
    assert ds8.resolution == 8 and [ds8.get_label(i).argmax() for i in range(4)] == [0, 0, 1, 1]
    with zipfile.ZipFile(tmp_path / 'in8.zip') as zf:
        assert json.loads(zf.read('dataset.json'))['class_names'] == ['n01000001', 'n02000002']


def test_labels_from_folders(tmp_path, tool):
    arrays = random_images(4)
    write_folder(tmp_path / 'pets', {'dog/1.png': arrays[0], 'cat/1.png': arrays[1], 'cat/2.png': arrays[2],
                                     'dog/sub/2.png': arrays[3]})
    run_tool(tool, '--source', tmp_path / 'pets', '--dest', tmp_path / 'p.zip', '--labels-from-folders')
    ds = ImageDataset(tmp_path / 'p.zip', use_labels=True)
    assert [ds.get_label(i).argmax() for i in range(4)] == [0, 0, 1, 1]  # cat/1, cat/2, dog/1, dog/sub/2
    np.testing.assert_array_equal(ds[3][0], arrays[3].transpose(2, 0, 1))
    PIL.Image.fromarray(arrays[0]).save(tmp_path / 'pets' / 'loose.png')
    result = run_tool(tool, '--source', tmp_path / 'pets', '--dest', tmp_path / 'q.zip', '--labels-from-folders',
                      ok=False)
    assert 'loose.png is not inside a class sub-folder' in result.output


def test_zip_source_resizes_and_converts_to_grey(tmp_path, tool):
    members = {f'{i}.png': png_bytes(a) for i, a in enumerate(random_images(3, (20, 24, 3)))}
    write_zip(tmp_path / 'src.zip', members)
    run_tool(tool, '--source', tmp_path / 'src.zip', '--dest', tmp_path / 'g', '--resolution', '8x8',
             '--channels', 1, '--max-images', 2)
    ds = ImageDataset(tmp_path / 'g')
    assert len(ds) == 2 and ds.image_shape == (1, 8, 8)
    run_tool(tool, '--source', tmp_path / 'src.zip', '--dest', tmp_path / 'x.zip', '--resolution', 12, ok=False)


def test_transforms_crop_to_square():
    wide = PIL.Image.fromarray(np.full((32, 64, 3), 200, dtype=np.uint8))
    letterbox = np.asarray(transform_image(wide, 'center-crop-wide', 32))
    assert letterbox.shape == (32, 32, 3)
    assert letterbox[:8].max() == 0 and letterbox[24:].max() == 0 and letterbox[8:24].min() == 200
    ramp = np.tile(np.arange(48, dtype=np.uint8), (16, 1))  # [16, 48]: crop keeps columns 16..31
    np.testing.assert_array_equal(np.asarray(transform_image(PIL.Image.fromarray(ramp), 'center-crop', None)),
                                  ramp[:, 16:32])
    with pytest.raises(DatasetError, match='not square'):
        transform_image(wide, 'none', 32)


def test_alpha_is_composited_on_white(tmp_path, tool):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # fully transparent black
    write_folder(tmp_path / 'alpha', {'a.png': rgba})
    run_tool(tool, '--source', tmp_path / 'alpha', '--dest', tmp_path / 'a.zip')
    assert ImageDataset(tmp_path / 'a.zip')[0][0].min() == 255


def test_workers_write_the_same_dataset(tmp_path):
    write_folder(tmp_path / 's', {f'{i:02d}.png': a for i, a in enumerate(random_images(40, (12, 12, 3)))})
    for workers in (1, 2):
        convert_dataset(ConvertConfig(str(tmp_path / 's'), str(tmp_path / f'w{workers}.zip'), resolution=8,
                                      workers=workers), progress=False)
    a, b = ImageDataset(tmp_path / 'w1.zip'), ImageDataset(tmp_path / 'w2.zip')
    np.testing.assert_array_equal(np.stack([x for x, _ in all_items(a)]), np.stack([x for x, _ in all_items(b)]))


# -- converter errors -----------------------------------------------------------------------------------------------
def test_unknown_source_kind_is_named(tmp_path, tool):
    (tmp_path / 'notes.txt').write_text('hello')
    result = run_tool(tool, '--source', tmp_path / 'notes.txt', '--dest', tmp_path / 'o.zip', ok=False)
    assert 'unknown source kind' in result.output and 'notes.txt' in result.output
    result = run_tool(tool, '--source', 'builtin:faces', '--dest', tmp_path / 'o.zip', ok=False)
    assert "unknown built-in dataset 'builtin:faces'; known: builtin:digits" in result.output


def test_dest_exists_needs_force(tmp_path, tool, labelled):
    src = tmp_path / 'src'
    result = run_tool(tool, '--source', src, '--dest', labelled['zip'], ok=False)
    assert 'out.zip already exists; pass --force' in result.output
    run_tool(tool, '--source', src, '--dest', labelled['zip'], '--resolution', 4, '--force')
    assert ImageDataset(labelled['zip']).resolution == 4
    run_tool(tool, '--source', src, '--dest', labelled['dir'], '--resolution', 4, '--force')
    assert ImageDataset(labelled['dir']).resolution == 4
    result = run_tool(tool, '--source', labelled['dir'], '--dest', tmp_path, '--force', ok=False)
    assert "which dataset_tool.py does not write; refusing to delete" in result.output


def test_converter_mixed_sizes_name_both_files(tmp_path, tool):
    write_folder(tmp_path / 'mixed', {'a.png': random_images(1, (8, 8, 3))[0],
                                      'b.png': random_images(1, (16, 16, 3))[0]})
    result = run_tool(tool, '--source', tmp_path / 'mixed', '--dest', tmp_path / 'o.zip', ok=False)
    assert 'b.png is 16x16' in result.output and 'a.png is 8x8' in result.output
    assert not (tmp_path / 'o.zip').exists()


def test_failed_conversion_leaves_no_output(tmp_path):
    images = {f'{i}.png': a for i, a in enumerate(random_images(5))}
    write_folder(tmp_path / 'src', images)
    (tmp_path / 'src' / '3.png').write_bytes(b'garbage')
    for dest in ('o.zip', 'o_dir'):
        with pytest.raises(DatasetError, match=r'src/3\.png: cannot decode'):
            convert_dataset(ConvertConfig(str(tmp_path / 'src'), str(tmp_path / dest)), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['src']  # no dest, no temp files


# -- built-in digits ------------------------------------------------------------------------------------------------
def test_make_digits_dataset_matches_sklearn(tmp_path, tool):
    from sklearn.datasets import load_digits
    digits = load_digits()
    path = make_digits_dataset(tmp_path / 'digits16.zip')
    ds = ImageDataset(path, use_labels=True)
    assert len(ds) == 1797 and ds.image_shape == (3, 16, 16) and ds.label_dim == 10
    images = np.stack([x for x, _ in all_items(ds)]).astype(np.float64)  # [N, 3, 16, 16]
    labels = np.array([ds.get_label(i).argmax() for i in range(len(ds))])
    np.testing.assert_array_equal(labels, digits.target)
    assert (images[:, 0] == images[:, 1]).all() and (images[:, 0] == images[:, 2]).all()
    down = images[:, 0].reshape(-1, 8, 2, 8, 2).mean(axis=(2, 4))  # 2x2 box mean back to 8x8
    assert np.corrcoef(down.ravel(), digits.images.ravel())[0, 1] > 0.95
    assert np.corrcoef(images.mean(axis=(1, 2, 3)), digits.images.mean(axis=(1, 2)))[0, 1] > 0.99
    result = run_tool(tool, '--source', 'builtin:digits', '--dest', tmp_path / 'd32.zip', '--resolution', 32,
                      '--max-images', 20)
    assert '20 images (32x32, 3 channel(s), ' in result.output


# -- the sampler that fixes the training order -------------------------------------------------------------------------
def test_batch_sampler_splits_global_batches_over_ranks_and_resumes_by_position():
    single = iter(InfiniteBatchSampler(10, 4, rank=0, world_size=1, seed=3))
    ranks = [iter(InfiniteBatchSampler(10, 4, rank=r, world_size=2, seed=3)) for r in range(2)]
    for _ in range(6):  # crosses epochs
        assert next(single) == next(ranks[0]) + next(ranks[1])
    later = iter(InfiniteBatchSampler(10, 4, rank=0, world_size=1, seed=3, start_nimg=24))
    assert next(later) == next(single)
    epoch = [InfiniteBatchSampler(10, 4, 0, 1, seed=3).index(i) for i in range(10)]
    assert sorted(epoch) == list(range(10))


def _sigterm_is_default(_) -> bool:
    import signal
    return signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_converter_pool_workers_take_sigterms_default_action():
    """A SIGTERM handler in the parent (bench.gpu_check installed one) must not reach the pool's forked workers: one
    that exits on it with the queue's lock held leaves the pool waiting for its siblings forever (a suite hang)."""
    import signal
    import sys

    from san_ext.data.converters import _mapper

    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with _mapper(2) as imap:
            assert all(imap(_sigterm_is_default, range(4)))
    finally:
        signal.signal(signal.SIGTERM, previous)
