"""Tests of the stacked digits (``builtin:stacked-digits``) and the ``stacked_modes`` metric: real stacked digits
cover nearly all 1000 modes, one digit triple covers one mode with KL = log 1000, noise is read with little
confidence, all against histograms computed here by a separate route (the classifier run channel by channel, numpy
bincounts, scipy's entropy); the dataset's labels decode to the digits the classifier reads; calc_metrics.py scores
a pipeline snapshot with it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from click.testing import CliRunner
from scripts import load_script  # tests/scripts.py

from san_ext.data import open_dataset
from san_ext.data.builtin import load_digits_images, split_indices
from san_ext.data.stacked import (
    STACKED_IMAGES,
    decode_modes,
    encode_modes,
    load_stacked_digits,
    stacked_digit_triples,
)
from san_ext.metrics import MetricOptions, compute_metric, get_extractor, get_metric
from san_ext.metrics.digits_net import load_classifier, to_float
from san_ext.metrics.stacked import CONFIDENCE, ModeHistogram, mode_kl

pytestmark = pytest.mark.usefixtures('one_thread')

N = 26_000  # PacGAN's sample count, the metric's default


# -- an independent reading: the classifier on each grey channel, numpy histograms, scipy's KL ---------------------
@torch.no_grad()
def _read_channels(images_nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Digits [N, 3] and top softmax probabilities [N, 3] of uint8 RGB images [N, 8, 8, 3], one channel at a time."""
    net = load_classifier()
    digits, conf = [], []
    for k in range(3):
        p = net(to_float(np.ascontiguousarray(images_nhwc[..., k]))).softmax(dim=1).numpy()
        digits.append(p.argmax(axis=1))
        conf.append(p.max(axis=1))
    return np.stack(digits, axis=1), np.stack(conf, axis=1)


def _by_hand(images_nhwc: np.ndarray) -> dict:
    digits, conf = _read_channels(images_nhwc)
    hist = np.bincount(digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2], minlength=1000)
    return dict(hist=hist, modes=int((hist > 0).sum()), kl=float(scipy.stats.entropy(hist, np.full(1000, 1.0))),
                confident=float((conf.min(axis=1) >= CONFIDENCE).mean()))


def _metric(images_nhwc: np.ndarray) -> ModeHistogram:
    ext = get_extractor('stacked_digits')
    x = torch.from_numpy(images_nhwc).permute(0, 3, 1, 2).contiguous()
    hist = ModeHistogram()
    for i in range(0, len(x), 2048):
        hist.update(ext(x[i:i + 2048]))
    return hist


class _Replay(torch.nn.Module):
    """A 'generator' that returns the given images in order, as floats in [-1, 1] (uint8 round-trips exactly)."""

    z_dim, c_dim = 4, 0

    def __init__(self, images_nhwc: np.ndarray) -> None:
        super().__init__()
        self.images = torch.from_numpy(images_nhwc).permute(0, 3, 1, 2).float() / 127.5 - 1
        self.next = 0

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        out = self.images[self.next:self.next + len(z)]
        self.next += len(z)
        return out


# -- the metric --------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def real8() -> np.ndarray:
    return load_stacked_digits(8, N)[0]


def test_real_stacked_digits_cover_almost_every_mode_with_kl_near_zero(real8):
    hand = _by_hand(real8)
    hist = _metric(real8)
    np.testing.assert_array_equal(hist.counts.numpy(), hand['hist'])
    scores = hist.scores()
    assert scores['modes'] == hand['modes'] >= 990
    assert scores['kl'] == pytest.approx(hand['kl'], rel=1e-9) and scores['kl'] < 0.05
    # the pipeline (calc_metrics.py's path) gives the same numbers for the same images
    result = compute_metric('stacked_modes', _Replay(real8), None,
                            MetricOptions(num_gen=N, batch_size=1000, num_workers=0, progress=False))
    assert result.num_gen == N and result.num_ref == 0 and result.extractor == 'stacked_digits'
    assert result.results == pytest.approx({'stacked_modes': hand['modes'], 'stacked_modes_kl': hand['kl'],
                                            'stacked_modes_confident': hand['confident']}, rel=1e-9)


def test_one_digit_triple_covers_one_mode_with_kl_log_1000(real8):
    one = np.repeat(real8[:1], 3000, axis=0)
    hand = _by_hand(one)
    result = compute_metric('stacked_modes', _Replay(one), None,
                            MetricOptions(num_gen=3000, batch_size=500, num_workers=0, progress=False)).results
    assert result['stacked_modes'] == hand['modes'] == 1
    assert result['stacked_modes_kl'] == pytest.approx(math.log(1000), rel=1e-12)  # closed form: log K
    assert hand['kl'] == pytest.approx(math.log(1000), rel=1e-12)
    assert np.flatnonzero(hand['hist']).tolist() == [int(encode_modes(_read_channels(real8[:1])[0])[0])]


def test_random_noise_is_read_with_a_low_confident_share(real8):
    noise = np.random.default_rng(0).integers(0, 256, (5000, 8, 8, 3), dtype=np.uint8)
    hand = _by_hand(noise)
    scores = _metric(noise).scores()
    assert scores['confident'] == pytest.approx(hand['confident'], abs=1e-12)
    real = _metric(real8[:5000]).scores()['confident']
    assert scores['confident'] < 0.25 < 0.9 < real  # measured: noise 0.15, real 0.96


def test_mode_histogram_orders_digits_r_g_b_and_counts_every_sample():
    logits = torch.full((4, 3, 10), -10.0)
    for i, (r, g, b) in enumerate([(1, 2, 3), (1, 2, 3), (9, 0, 0), (0, 0, 7)]):
        logits[i, 0, r] = logits[i, 1, g] = logits[i, 2, b] = 10.0
    logits[3, 2] = 0.0  # a flat channel: read as digit 0, not confident
    hist = ModeHistogram().update(logits.reshape(4, 30))
    assert {m: int(c) for m, c in enumerate(hist.counts) if c} == {123: 2, 900: 1, 0: 1}
    assert hist.scores()['confident'] == 0.75 and hist.scores()['num'] == 4
    with pytest.raises(ValueError, match='class logits'):
        hist.update(torch.zeros(2, 10))


def test_mode_kl_matches_scipy_and_is_zero_for_uniform():
    counts = np.random.default_rng(1).integers(0, 5, 1000)
    assert mode_kl(counts) == pytest.approx(scipy.stats.entropy(counts, np.ones(1000)), rel=1e-12)
    assert mode_kl(np.full(1000, 7)) == pytest.approx(0.0, abs=1e-12)


def test_stacked_modes_is_registered_with_pacgans_count_and_no_reference():
    spec = get_metric('stacked_modes')
    assert (spec.kind, spec.extractor, spec.num_gen, spec.max_ref) == ('modes', 'stacked_digits', 26_000, 0)


# -- the data ----------------------------------------------------------------------------------------------------
def test_modes_encode_and_decode():
    digits = np.array([[0, 0, 0], [1, 2, 3], [9, 9, 9], [9, 0, 5]])
    assert encode_modes(digits).tolist() == [0, 123, 999, 905]
    np.testing.assert_array_equal(decode_modes(encode_modes(digits)), digits)


def test_stacked_images_draw_from_the_train_split_only():
    images, labels = load_digits_images(8)
    train, test = split_indices(labels)
    triples = stacked_digit_triples()
    assert triples.shape == (STACKED_IMAGES, 3) == (128_000, 3)
    assert triples.min() == 0 and triples.max() == len(train) - 1  # indices into the 1,347 training digits
    stacked, modes = load_stacked_digits(8, 500)
    for k in range(3):  # channel k of image i is training digit triples[i, k], with its class in the label
        np.testing.assert_array_equal(stacked[..., k], images[train[triples[:500, k]], ..., 0])
        np.testing.assert_array_equal(decode_modes(modes)[:, k], labels[train[triples[:500, k]]])
    held_out = {images[i, ..., 0].tobytes() for i in test} - {images[i, ..., 0].tobytes() for i in train}
    assert not held_out & {stacked[i, ..., k].tobytes() for i in range(500) for k in range(3)}
    shares = np.bincount(decode_modes(load_stacked_digits(8)[1]).ravel(), minlength=10) / (3 * STACKED_IMAGES)
    assert shares.min() > 0.095 and shares.max() < 0.105  # independent uniform draws: ~10% per digit


def test_dataset_tool_labels_decode_to_the_digits_the_classifier_reads(tmp_path):
    tool = load_script('dataset_tool').main
    res = CliRunner().invoke(tool, ['--source', 'builtin:stacked-digits', '--dest', str(tmp_path / 'stacked16.zip'),
                                    '--resolution', '16', '--max-images', '3000'])
    assert res.exit_code == 0, res.output
    expected = load_stacked_digits(16, 3000)[1]
    assert f'Wrote 3000 images (16x16, 3 channel(s), {expected.max() + 1} classes)' in res.output
    ds = open_dataset(tmp_path / 'stacked16.zip', use_labels=True)
    x = torch.from_numpy(np.stack([ds[i][0] for i in range(len(ds))]))  # [N, 3, 16, 16]
    labels = np.array([ds.get_label(i).argmax() for i in range(len(ds))])
    np.testing.assert_array_equal(labels, expected)
    read = get_extractor('stacked_digits')(x).reshape(-1, 3, 10).argmax(dim=2).numpy()
    agree = (read == decode_modes(labels)).mean()
    assert agree >= 0.97  # measured 0.989 of the digits at 16x16 (block-averaged to 8x8)
    meta = json.loads(_zip_member(tmp_path / 'stacked16.zip', 'dataset.json'))
    assert meta['class_names'][:2] == ['000', '001'] and len(meta['class_names']) == 1000
    real8, modes8 = load_stacked_digits(8, 3000)
    assert (_read_channels(real8)[0] == decode_modes(modes8)).all(axis=1).mean() >= 0.97  # whole images at 8x8


def _zip_member(path: Path, name: str) -> str:
    import zipfile

    with zipfile.ZipFile(path) as z:
        return z.read(name).decode()


# -- any G the project loads: a pipeline snapshot through calc_metrics.py ----------------------------------------
def test_calc_metrics_scores_a_pipeline_snapshot_with_stacked_modes(tmp_path):
    from san_ext.checkpoint import save_snapshot
    from san_ext.data import ConvertConfig, convert_dataset
    from san_ext.training.build import build_networks
    from san_ext.training.options import TrainOptions, build_config

    data = convert_dataset(ConvertConfig(source='builtin:stacked-digits', dest=str(tmp_path / 's16.zip'),
                                         resolution=16, max_images=64), progress=False).dest
    cfg = build_config(TrainOptions(outdir=str(tmp_path / 'runs'), data=str(data), batch=4, cbase=512, cmax=32,
                                    syn_layers=4, backbones=('tf_efficientnet_lite0',), pretrained=False,
                                    interp_size=128, metrics=('none',), workers=0, device='cpu'))
    _, _, G_ema = build_networks(cfg, torch.device('cpu'))
    snapshot = save_snapshot(tmp_path / 'run', G_ema, cfg.to_dict(), 0)
    res = CliRunner().invoke(load_script('calc_metrics').main, [
        '--network', str(snapshot), '--metrics', 'stacked_modes', '--num-gen', '200', '--device', 'cpu',
        '--batch', '50', '--no-progress'])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / 'run' / 'metric-stacked_modes.jsonl').read_text().splitlines()[0])
    r = record['results']
    assert 1 <= r['stacked_modes'] <= 200 and 0 <= r['stacked_modes_kl'] <= math.log(1000) + 1e-9
    assert 0 <= r['stacked_modes_confident'] <= 1
    assert record['num_gen'] == 200 and record['extractor'] == 'stacked_digits'
