"""Contracts of the generator conversion (san_ext.legacy.generator) that the broader legacy tests reach without
pinning, written against the survivors of a mutation run (``python -m san_ext.bench.mutation``): its refusals and
report, the stem configuration read from recorded constructor arguments, the comparison of each rebuilt synthesis
layer with the recorded one (sizes whole, paddings, a relative tolerance of 1e-9), the search over superres
up-factors, the class-row cut and the entry point's defaults. Each test names the planted bug it fails on.
Generator-only pickles of a 16 px stem keep these fast.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pytest
import torch
from legacy_pickles import (  # tests/legacy_pickles.py: writers of upstream-format pickles
    CHAIN,
    dump,
    make_G,
    persistent,
    upstream_generator,
)
from messages import raised_message  # tests/messages.py

from san_ext import legacy
from san_ext.legacy import read_pickle
from san_ext.legacy.convert import ConversionError, ConversionReport
from san_ext.legacy.generator import _rename, _stem_config, convert_generator
from san_ext.legacy.records import ModuleView, PersistentRecord, record_class
from san_ext.networks import GeneratorConfig, SuperresConfig

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def stem():
    return make_G((), seed=5)


# -- the generator's conversion: refusals, warnings, the report --------------------------------------------------------
def load_ema(tmp_path, tree, name: str = 'g.pkl'):
    return legacy.load(dump(tmp_path / name, {'G_ema': tree}), components=('G_ema',))


def ema_refusal(tmp_path, tree) -> str:
    return raised_message(legacy.load, dump(tmp_path / 'bad.pkl', {'G_ema': tree}), ('G_ema',), error=ConversionError)


def test_generator_refusals_have_the_full_message(tmp_path, stem):
    """Bugs: each message None or altered; the recorded or the rebuilt value shown wrongly; constructor arguments
    without the resolution let through (joined with "and")."""
    assert ema_refusal(tmp_path, persistent('MappingNetwork')) == (
        'G_ema is a training.networks_stylegan3_resetting.MappingNetwork (persistent), not a StyleGAN-XL generator')
    for kwargs in ({}, {'w_dim': 512}):   # none recorded, or not the resolution
        tree = upstream_generator(stem)
        tree.synthesis._init_kwargs = kwargs
        assert ema_refusal(tmp_path, tree) == ('G_ema.synthesis lacks its recorded constructor arguments '
                                               '(_init_kwargs); this is not a pickle written by StyleGAN-XL')
    tree = upstream_generator(stem)
    tree.synthesis.L1_36_128.in_cutoff = np.float64(99.0)
    rebuilt = stem.synthesis.L1_36_128.spec.in_cutoff
    assert ema_refusal(tmp_path, tree) == ('G_ema: cannot rebuild the recorded stem (G_ema.synthesis.L1_36_128.'
                                           f'in_cutoff: recorded 99.0, rebuilt {rebuilt!r})')
    del tree.synthesis.L1_36_128.in_cutoff   # was a TypeError from float(None) before the layer split checked
    assert ema_refusal(tmp_path, tree) == ('G_ema.synthesis.L1_36_128.in_cutoff is not recorded; this is not a '
                                           'pickle written by StyleGAN-XL')
    tree = upstream_generator(stem)
    del tree.synthesis.L1_36_128.padding
    assert ema_refusal(tmp_path, tree) == ('G_ema: cannot rebuild the recorded stem (G_ema.synthesis.L1_36_128.'
                                           'padding is not recorded)')
    tree = upstream_generator(stem)
    names = list(stem.synthesis.layer_names)
    tree.synthesis.layer_names = names[::-1]
    assert ema_refusal(tmp_path, tree) == (f'G_ema: cannot rebuild the recorded stem (layer names {names[::-1]} '
                                           f'recorded, {names} rebuilt)')
    tree = upstream_generator(stem)
    tree.mapping.num_ws = 99
    assert ema_refusal(tmp_path, tree) == f'G_ema.mapping.num_ws is 99, the rebuilt generator has {stem.num_ws}'


def test_generator_report_rewrites_class_rows_and_warns_of_what_it_does_not_take_over(tmp_path, stem):
    """Bugs: the row-cut or drop notes altered; unknown synthesis options or other conv_clamp values not warned."""
    tree = upstream_generator(stem)
    tree.synthesis._init_kwargs['style_mixing'] = 0.5
    tree.synthesis.L1_36_128.conv_clamp = None
    report = load_ema(tmp_path, tree).meta['reports']['G_ema']
    assert report['rewritten'] == ['mapping.embed.weight: first 10 of 1000 rows kept (labels index rows 0..9 only)']
    assert report['warnings'] == [
        f"recorded conv_clamp values ['256', 'None'] differ from ours ({stem.cfg.conv_clamp}); upstream gives "
        'superres heads conv_clamp=256 even for --fp32 stems',
        "recorded synthesis options not taken over: ['style_mixing']"]
    uncond = load_ema(tmp_path, upstream_generator(make_G((), c_dim=0, seed=7)), 'u.pkl').meta['reports']['G_ema']
    assert uncond['dropped'] == {'mapping.embed.weight': 'class embedding of an unconditional generator (upstream '
                                                         'loads it, never uses it)'}
    assert uncond['rewritten'] == [] and uncond['warnings'] == []


def test_a_superres_chain_that_does_not_factor_is_refused_with_the_full_message(tmp_path):
    """Bug: the message None or altered when no up-factor product gives the recorded resolution."""
    tree = upstream_generator(make_G(CHAIN[:1], seed=8))
    tree.img_resolution = 48
    assert ema_refusal(tmp_path, tree) == ('G_ema: no superres chain with head_layers [4] from 16px to 48px reproduces '
                                           'the recorded layers; tried nothing (the resolutions do not factor into 2, '
                                           '4, 8, 16)')


# -- the stem configuration from recorded constructor arguments --------------------------------------------------------
def stem_views(synthesis_kwargs: dict, mapping_kwargs: Optional[dict] = None, embed_dim: Optional[int] = None):
    """(mapping, synthesis) views of persistent records holding only the given _init_kwargs."""
    def persistent_record(name: str, kwargs: dict, modules: Optional[dict] = None) -> PersistentRecord:
        state = {'_init_kwargs': kwargs, '_modules': modules or {}, '_parameters': {}, '_buffers': {}}
        return PersistentRecord(name, state, 6, '', 'training.networks_stylegan3')
    modules = {}
    if embed_dim is not None:
        embed = record_class('torch.nn.modules.sparse', 'Embedding')()
        embed.state = {'_modules': {}, '_parameters': {'weight': torch.zeros(1000, embed_dim)}, '_buffers': {}}
        modules['embed'] = embed
    mapping = persistent_record('MappingNetwork', {'z_dim': 64, 'w_dim': 128, **(mapping_kwargs or {})}, modules)
    synthesis = persistent_record('SynthesisNetwork', {'img_resolution': 16, **synthesis_kwargs})
    return ModuleView(mapping, 'G.mapping'), ModuleView(synthesis, 'G.synthesis')


def test_stem_config_takes_upstreams_defaults_for_what_is_not_recorded():
    """Bugs: the defaults of conv_kernel, use_radial_filters, channel_base / channel_max, img_channels or the embed
    width altered or lost; the embedding looked up under another name."""
    cfg = _stem_config(*stem_views({}))
    assert (cfg.synthesis, cfg.conv_kernel, cfg.use_radial_filters) == ('stylegan3-t', None, None)
    assert (cfg.channel_base, cfg.channel_max, cfg.img_channels, cfg.embed_dim) == (16384, 256, 3, 320)
    assert (cfg.mapping_layers, cfg.mapping_lr_multiplier, cfg.c_dim) == (2, 0.01, 0)
    assert _stem_config(*stem_views({}, embed_dim=512)).embed_dim == 512


def test_stem_config_reads_what_is_recorded():
    """Bugs: recorded img_channels or the mapping's lr_multiplier looked up under another name."""
    cfg = _stem_config(*stem_views({'img_channels': 1, 'channel_base': 4096, 'channel_max': 128},
                                   {'lr_multiplier': 0.05, 'num_layers': 4, 'c_dim': 10}))
    assert (cfg.img_channels, cfg.channel_base, cfg.channel_max) == (1, 2048, 64)
    assert (cfg.mapping_lr_multiplier, cfg.mapping_layers, cfg.c_dim) == (0.05, 4, 10)


@pytest.mark.parametrize('kernel,radial,expect', [
    (1, True, ('stylegan3-r', None, None, 32768 // 4)), (3, True, ('stylegan3-t', None, True, 32768 // 2)),
    (1, False, ('stylegan3-t', 1, None, 32768 // 2)), (2, True, ('stylegan3-t', 2, True, 32768 // 2))],
    ids=['R', 'T radial', 'T kernel 1', 'T kernel 2'])
def test_stem_config_tells_R_from_T_by_kernel_and_radial_filters(kernel, radial, expect):
    """Bugs: conv_kernel looked up under another name; R recognised by another kernel (2) or named otherwise; the
    recorded radial flag dropped for T; R's kernel 1 reported as a non-default."""
    cfg = _stem_config(*stem_views({'conv_kernel': kernel, 'use_radial_filters': radial, 'channel_base': 32768}))
    assert (cfg.synthesis, cfg.conv_kernel, cfg.use_radial_filters, cfg.channel_base) == expect


def test_superres_head_layers_default_and_a_contradicting_up_factor(tmp_path):
    """Bugs: the head count of a superres stage without a recorded head_layers taken as one more or one less than its
    layers; a recorded up_factor not checked (a spelling that never matches)."""
    G = make_G(CHAIN[:1], seed=9)
    tree = upstream_generator(G)
    del tree._init_kwargs['head_layers']
    spec = legacy.read_generator_spec(dump(tmp_path / 'sr.pkl', {'G_ema': tree}))
    assert [(s['head_layers'], s['up_factor']) for s in spec['stages']] == [(4, 2)]
    tree._init_kwargs['up_factor'] = 4
    msg = raised_message(legacy.read_generator_spec, dump(tmp_path / 'sr4.pkl', {'G_ema': tree}), error=ConversionError)
    assert msg.startswith('G_ema: no superres chain with head_layers [4] from 16px to 32px reproduces the recorded '
                          'layers; tried nothing')

def test_stem_config_reads_the_mapping_widths_and_w_avg_beta():
    """Bugs: z_dim or w_dim not passed (our defaults come back); w_avg_beta not passed or looked up under another
    name (upstream's default 0.998 comes back), or its default altered."""
    cfg = _stem_config(*stem_views({}, {'z_dim': 32, 'w_avg_beta': 0.995}))
    assert (cfg.z_dim, cfg.w_dim, cfg.w_avg_beta) == (32, 128, 0.995)
    assert _stem_config(*stem_views({})).w_avg_beta == 0.998


@pytest.mark.parametrize('base,cmax,expect', [(32768, 1024, (8192, 256)), (32770, 1026, (8192.5, 256.5))],
                         ids=['whole', 'halves'])
def test_stem_config_keeps_channel_widths_whole_when_they_divide(base, cmax, expect):
    """Upstream passes R's widths multiplied by 4; ours divides them back. Bugs: a width that divides left a float
    (16384.0: the spec then records floats), one that does not rounded down to an int."""
    cfg = _stem_config(*stem_views({'conv_kernel': 1, 'use_radial_filters': True, 'channel_base': base,
                                    'channel_max': cmax}))
    assert (cfg.channel_base, cfg.channel_max) == expect
    assert [type(v) for v in (cfg.channel_base, cfg.channel_max)] == [type(v) for v in expect]


# -- comparing a rebuilt layer with the recorded one ------------------------------------------------------------------
def layer_refusal(tmp_path, stem, field: str, value) -> Optional[str]:
    """The refusal of a stem pickle whose first layer records ``value`` for ``field`` (None: it loads)."""
    tree = upstream_generator(stem)
    setattr(tree.synthesis.L1_36_128, field, value)
    try:
        load_ema(tmp_path, tree)
    except ConversionError as e:
        return str(e)
    return None


def test_recorded_sizes_are_compared_whole(tmp_path, stem):
    """Upstream records sizes as [w, h]; ours keeps one side of a square. Bugs: only the first (or second) entry
    compared; an empty recorded size matched by broadcasting; the recorded array shown as an array repr instead of a
    list."""
    assert layer_refusal(tmp_path, stem, 'in_size', np.array([36, 36])) is None
    assert layer_refusal(tmp_path, stem, 'in_size', np.array([], dtype=np.int64)) == (
        'G_ema: cannot rebuild the recorded stem (G_ema.synthesis.L1_36_128.in_size: recorded [], rebuilt 36)')
    for size in ([36, 40], [40, 36]):
        assert layer_refusal(tmp_path, stem, 'in_size', np.array(size)) == (
            f'G_ema: cannot rebuild the recorded stem (G_ema.synthesis.L1_36_128.in_size: recorded {size}, rebuilt 36)')


def test_recorded_paddings_are_compared_by_value_and_length(tmp_path, stem):
    """Bugs: a padding recorded as a tuple (not a list) refused or compared as a number; a shorter padding
    accepted."""
    padding = list(stem.synthesis.L1_36_128.padding)
    assert layer_refusal(tmp_path, stem, 'padding', tuple(np.int64(p) for p in padding)) is None
    assert layer_refusal(tmp_path, stem, 'padding', padding[:3]) == (
        f'G_ema: cannot rebuild the recorded stem (G_ema.synthesis.L1_36_128.padding: recorded {padding[:3]}, '
        f'rebuilt {padding})')


@pytest.mark.parametrize('offset,refused', [(1e-12, False), (9e-9, True), (1.2e-5, True), (0.5, True)])
def test_recorded_floats_match_to_a_relative_1e_9(tmp_path, stem, offset, refused):
    """Both sides compute cutoffs in float64 from the same formulas: rounding passes, anything more is a different
    layer (the half width is 6, so 9e-9 is 1.5e-9 relative). Bugs: numpy's default tolerances (1e-5 relative, 1e-8
    absolute) or a tolerance of about 1."""
    in_half_width = stem.synthesis.L1_36_128.spec.in_half_width
    assert in_half_width == 6.0
    problem = layer_refusal(tmp_path, stem, 'in_half_width', np.float64(in_half_width + offset))
    assert (problem is not None) == refused


def test_a_recorded_field_that_is_not_a_number_is_named(tmp_path, stem):
    """Bug: a ValueError or TypeError from float() or numpy escaping instead of the conversion's own error naming the
    field (the cutoffs are read when the layers are split into stages, the sizes when each layer is compared)."""
    assert layer_refusal(tmp_path, stem, 'out_cutoff', 'wide') == (
        "G_ema.synthesis.L1_36_128.out_cutoff: recorded 'wide', not a number")
    assert layer_refusal(tmp_path, stem, 'in_size', ['wide']) == (
        "G_ema: cannot rebuild the recorded stem (G_ema.synthesis.L1_36_128.in_size: recorded ['wide'], not a "
        'number)')


# -- the superres chain ------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def chain_4_2():
    """A 16 -> 128 px chain upsampling 4x then 2x: (2, 4) is tried first and must fail."""
    return make_G((SuperresConfig(4, 4), SuperresConfig(3, 2)), seed=11)


def test_every_up_factor_product_is_tried_until_one_rebuilds_the_layers(tmp_path, chain_4_2):
    """Bug: the first product of up-factors taken without rebuilding it (a chain 4x then 2x loads as 2x then 4x)."""
    tree = upstream_generator(chain_4_2)
    del tree._init_kwargs['up_factor']
    spec = legacy.read_generator_spec(dump(tmp_path / 'c.pkl', {'G_ema': tree}))
    assert [(s['head_layers'], s['up_factor']) for s in spec['stages']] == [(4, 4), (3, 2)]


def test_a_chain_no_product_rebuilds_is_refused_listing_every_try(tmp_path, chain_4_2):
    """Bugs: a try recorded as None or without its problem; the tries joined by another separator."""
    tree = upstream_generator(chain_4_2)
    del tree._init_kwargs['up_factor']
    last = chain_4_2.synthesis.layer_names[-1]
    getattr(tree.synthesis, last).in_half_width = np.float64(99.0)
    msg = raised_message(legacy.read_generator_spec, dump(tmp_path / 'c.pkl', {'G_ema': tree}), error=ConversionError)
    head = 'G_ema: no superres chain with head_layers [4, 3] from 16px to 128px reproduces the recorded layers; tried '
    assert msg.startswith(head + 'up-factors (2, 4): ')
    rebuilt = getattr(chain_4_2.synthesis, last).spec.in_half_width
    assert msg.endswith(f'; up-factors (4, 2): G_ema.synthesis.{last}.in_half_width: recorded 99.0, rebuilt '
                        f'{rebuilt!r}')
    assert msg.count('; up-factors') == 1


def test_a_recorded_head_count_that_contradicts_the_layers_is_refused(tmp_path):
    """Bug: the recorded head_layers of the last stage ignored (looked up under another name) in favour of the count
    the layers suggest."""
    tree = upstream_generator(make_G(CHAIN[:1], seed=9))
    tree._init_kwargs['head_layers'] = 5
    msg = raised_message(legacy.read_generator_spec, dump(tmp_path / 'h.pkl', {'G_ema': tree}), error=ConversionError)
    assert msg.startswith('G_ema: no superres chain with head_layers [5] from 16px to 32px reproduces the recorded '
                          'layers; tried up-factors (2,): ')


def test_a_superres_generator_without_its_resolution_is_refused(tmp_path):
    """Bug: a missing img_resolution read as None (a TypeError) or as a number."""
    tree = upstream_generator(make_G(CHAIN[:1], seed=9))
    del tree.img_resolution
    assert ema_refusal(tmp_path, tree) == ('G_ema.img_resolution is not recorded; this is not a pickle written by '
                                           'StyleGAN-XL')


# -- renaming and the entry point --------------------------------------------------------------------------------------
def test_class_rows_are_cut_only_beyond_the_class_count():
    """Bugs: rows counted on the wrong axis (an embedding narrower than the class count is not cut); an embedding of
    exactly c_dim rows reported as cut."""
    cfg = GeneratorConfig(img_resolution=16, c_dim=10)
    report = ConversionReport('G')
    out = _rename({'mapping.embed.weight': torch.zeros(1000, 8)}, cfg, report)
    assert out['mapping.embed.weight'].shape == (10, 8) and len(report.rewritten) == 1
    report = ConversionReport('G')
    exact = torch.zeros(10, 320)
    assert _rename({'mapping.embed.weight': exact}, cfg, report)['mapping.embed.weight'] is exact
    assert report.rewritten == []


def test_convert_generator_defaults_to_the_name_G_and_strict_loading(tmp_path, stem):
    """Bugs: the default name altered (reports and errors name another network); strict=False by default (a tensor
    no rule maps passes)."""
    tree = upstream_generator(stem)
    tree.mapping.register_buffer('extra', torch.zeros(1))
    record = read_pickle(dump(tmp_path / 'x.pkl', {'G_ema': tree}))['G_ema']
    msg = raised_message(convert_generator, record, error=ConversionError)
    assert msg.startswith('G: tensors in the pickle that no rule maps: mapping.extra.')
    G, report = convert_generator(record, strict=False)
    assert report.component == 'G' and report.unexpected == ['mapping.extra'] and G.cfg == stem.cfg
