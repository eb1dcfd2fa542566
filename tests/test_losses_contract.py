"""Loss API contract beyond the values: every error names the method and what it was given, ``dim=`` reduces one
dimension only, weights keep the logits' dtype and device, and ``dir_weight = 0`` is a valid lambda.

Written against mutmut's survivors in ``san_ext/losses.py`` (``python -m san_ext.bench.mutation``): each test
below failed on the planted bug it names.
"""

import re

import numpy as np
import pytest
import torch
from messages import raised_message  # tests/messages.py

from san_ext import losses

INT = torch.tensor([1, 2])
X3, X4 = torch.randn(3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)


_message = raised_message


# -- every error says where it came from and what it got -----------------------------------------------------------
# (method name, call with integer logits): the method name starts the message (planted: where=None, 'XXd_realXX')
WHERE = {
    'd_real': lambda: losses.get('lsgan').d_real(INT),
    'd_fake': lambda: losses.get('lsgan').d_fake(INT),
    'g': lambda: losses.get('lsgan').g(INT),
    'direction_weights': lambda: losses.get('lsgan').direction_weights(INT, real=True),
    'pair_direction_weights': lambda: losses.get('rpgan').pair_direction_weights(INT, X3),
    'd_pair': lambda: losses.get('rpgan').d_pair(INT, X3),
}


@pytest.mark.parametrize('where', WHERE)
def test_integer_logits_are_refused_naming_the_method_and_the_dtype(where):
    assert _message(WHERE[where]) == f'{where} expects floating-point logit tensors, got Tensor of dtype torch.int64'


@pytest.mark.parametrize('where,call', [
    ('d_real', lambda: losses.get('hinge', san=True).d_real((INT.double(), INT))),
    ('d_fake', lambda: losses.get('hinge', san=True).d_fake((X3, [1.0, 2.0, 3.0]))),
    ('d_pair', lambda: losses.get('rpgan', san=True).d_pair((X3, X3), (X3, INT))),
    ('g', lambda: losses.get('rpgan').g(X3, real=INT)),
    ('pair_direction_weights', lambda: losses.get('rpgan').pair_direction_weights(X3, INT)),
])
def test_each_input_of_a_pair_is_checked_under_the_methods_name(where, call):
    assert _message(call).startswith(f'{where} expects floating-point logit tensors, got ')


def test_non_tensors_are_named_by_their_type():
    assert _message(lambda: losses.get('lsgan').d_real(np.ones(3))) == \
        'd_real expects floating-point logit tensors, got ndarray'
    assert _message(lambda: losses.get('lsgan').d_real([X3, X3])) == ("lsgan d_real (san=False) expects one logit "
                                                                       "tensor, got a pair; use san_ext.losses.get("
                                                                       "'lsgan', san=True) for (fun, dir)")
    assert _message(lambda: losses.get('hinge', san=True).d_real(3.0)) == \
        'SAN hinge d_real expects the pair (fun, dir) from D(x, flg_train=True), got float'
    assert _message(lambda: losses.get('hinge', san=True).d_fake((X3, X3, X3))) == \
        'SAN d_fake expects exactly (fun, dir), got 3 items'


@pytest.mark.parametrize('where,call', [
    ('d_pair', lambda: losses.get('rpgan').d_pair(X3, X4)),
    ('g', lambda: losses.get('rpgan').g(X3, real=X4)),
    ('pair_direction_weights', lambda: losses.get('rpgan').pair_direction_weights(X4, X3)),
])
def test_paired_shape_errors_name_the_method(where, call):
    assert re.fullmatch(rf'{where}: a paired loss scores real element i against fake element i, so both logit '
                        r'tensors need one shape; got real \[\d\] and fake \[\d\] \(draw as many real as generated '
                        r'samples\)', _message(call))


@pytest.mark.parametrize('where,use,call', [
    ('d_real', 'd_pair(real, fake) or d_loss(real, fake)', lambda: losses.get('rpgan').d_real(X3)),
    ('d_fake', 'd_pair(real, fake) or d_loss(real, fake)', lambda: losses.get('rpgan', san=True).d_fake((X3, X3))),
    ('direction_weights', 'pair_direction_weights(real, fake)',
     lambda: losses.get('rpgan').direction_weights(X3, real=True)),
])
def test_per_side_calls_on_a_paired_loss_say_which_call_to_use(where, use, call):
    assert _message(call) == (f'rpgan is a paired loss: each real sample is scored against a generated one, so '
                              f'{where} has no meaning alone; use {use}')


def test_generator_step_with_a_san_pair_says_how_to_call_D():
    assert _message(lambda: losses.get('hinge', san=True).g((X3, X3))).endswith(
        'call D without flg_train in the generator step')


def test_registry_errors_list_exactly_the_valid_names():
    known = ', '.join(losses.list_losses())
    assert _message(lambda: losses.unregister('nope')) == f"unknown loss 'nope'; known: {known}"
    assert _message(lambda: losses.get('hinge', B=1, A=2)) == \
        "loss 'hinge' has no option 'A', 'B'; its options: dir_weight"
    assert _message(lambda: losses.get('klwgan', X=1)).endswith('its options: T, dir_weight')
    assert _message(lambda: losses.register('hinge')(losses.HingeLoss)) == "loss 'hinge' is already registered"
    assert _message(lambda: losses.register('x-san')(losses.HingeLoss)) == \
        "loss name 'x-san' would read as a SAN spec; pick a name that is not 'san' and does not end in '-san'"


# -- behaviour ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['hinge', 'nonsaturating', 'rpgan'])
def test_dim_averages_over_that_dimension_only(name):
    """[N, K] logits with dim=0 give K losses, the column means (planted: dim dropped in d_loss/g_loss/_mean)."""
    loss = losses.get(name)
    real, fake = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    if loss.paired:
        d_elem, g_elem = loss.d_pair(real, fake), loss.g(fake, real=real)
        d_cols = d_elem.numpy().mean(0)
    else:
        d_elem, g_elem = None, loss.g(fake)
        d_cols = loss.d_real(real).numpy().mean(0) + loss.d_fake(fake).numpy().mean(0)
    assert d_elem is None or d_elem.shape == (5, 3)
    np.testing.assert_allclose(loss.d_loss(real, fake, dim=0).numpy(), d_cols, rtol=1e-12)
    np.testing.assert_allclose(loss.g_loss(fake, real=real, dim=0).numpy(), g_elem.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(loss.d_loss(real, fake).item(), d_cols.mean(), rtol=1e-12)
    np.testing.assert_allclose(loss.g_loss(fake, real=real, dim=1).numpy(), g_elem.numpy().mean(1), rtol=1e-12)


@pytest.mark.parametrize('name', [n for n in losses.list_losses() if not losses.get(n).paired])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_direction_weights_keep_the_logits_dtype(name, dtype):
    """Hinge's and Wasserstein's weight is the Python float 1 (planted: dtype dropped gives float32 for float64)."""
    for real in (True, False):
        assert losses.get(name).direction_weights(torch.randn(4, dtype=dtype), real=real).dtype == dtype


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('name', ['hinge', 'klwgan'])
def test_direction_weights_stay_on_the_logits_device(name):
    """Planted: device dropped builds hinge's constant 1 on the CPU (survives on CPU-only machines)."""
    assert losses.get(name).direction_weights(torch.randn(4, device='cuda'), real=True).device.type == 'cuda'


def test_a_zero_direction_weight_is_valid_and_removes_the_direction_term():
    """lambda >= 0 (docs/LOSSES.md); 0 trains the direction by nothing (planted: `<= 0` refuses it)."""
    fun, dir_ = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    loss = losses.get('hinge', san=True, dir_weight=0.0)
    torch.testing.assert_close(loss.d_real((fun, dir_)), losses.get('hinge').d_real(fun))
    assert 'dir_weight' in _message(lambda: losses.get('hinge', san=True, dir_weight=-0.1))


def test_spec_name_refuses_an_unknown_loss_listing_the_known_ones():
    """Planted: the message None; the known losses joined from None or by another separator."""
    assert _message(losses.spec_name, 'nope', True, error=ValueError) == (
        "unknown loss 'nope'; known: hinge, klwgan, lsgan, nonsaturating, rpgan, saturating, wasserstein")
