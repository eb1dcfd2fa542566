"""normalized_linear: the SAN projection s * <w / ||w||, h> (SAN, Eq. 7), reference, routing, C++ autograd, CUDA."""

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from san_ext import SANLinear
from san_ext import layers as san_layers
from torch_utils.ops.loader import load_op, op_status
from torch_utils.ops.normalized_linear import _normalized_linear_ref, normalized_linear

MODES = ['row', 'class']
ROOT = Path(__file__).resolve().parents[1]


def gpu(fn):
    """Marks a test ``cuda`` and skips it without a GPU."""
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')(fn))


def _inputs(mode, n=6, d=5, rows=4, dtype=torch.float64, device='cpu', class_scale_2d=True, seed=0):
    """h [n, d], weight [rows, d] off the unit sphere, scale, class ids (None per row); all leaves needing grad."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(rows, d, generator=g, dtype=torch.float64) * 3.0
    s = torch.rand(rows, generator=g, dtype=torch.float64) + 0.5
    c = None
    if mode == 'class':
        c = torch.randint(rows, (n,), generator=g).to(device)
        if class_scale_2d:
            s = s.view(rows, 1)  # sony/san's SANEmbedding shape
    h, w, s = (t.to(device=device, dtype=dtype).requires_grad_() for t in (h, w, s))
    return h, w, s, c


def _numpy_out(h, w, s, c):
    h, w, s = (t.detach().cpu().double().numpy() for t in (h, w, s))
    w_hat = w / np.linalg.norm(w, axis=1, keepdims=True)
    s = s.reshape(-1)
    if c is None:
        return np.einsum('nd,od->no', h, w_hat) * s
    c = c.cpu().numpy()
    return np.einsum('nd,nd->n', h, w_hat[c]) * s[c]


def _numpy_weight_grad(h, w, s, c, g):
    """d/dW sum(g * s <W/||W||, h>) = s/||W|| (h - w_hat <w_hat, h>), summed over the samples of each row."""
    h, w, s, g = (t.detach().cpu().double().numpy() for t in (h, w, s, g))
    norm = np.linalg.norm(w, axis=1, keepdims=True)
    w_hat, s = w / norm, s.reshape(-1)
    out = np.zeros_like(w)
    for n in range(h.shape[0]):
        for o in ([int(c[n])] if c is not None else range(w.shape[0])):
            gn = g[n] if c is not None else g[n, o]
            out[o] += gn * s[o] / norm[o, 0] * (h[n] - w_hat[o] * (w_hat[o] @ h[n]))
    return out


def _grads(out, inputs, g):
    grads = torch.autograd.grad((out * g).sum(), inputs, allow_unused=True, retain_graph=True)
    return [None if x is None or torch.count_nonzero(x) == 0 else x for x in grads]


# ---- reference path (CPU) ----

@pytest.mark.parametrize('mode', MODES)
def test_ref_matches_independent_numpy(mode):
    h, w, s, c = _inputs(mode)
    expected = _numpy_out(h, w, s, c)
    out = normalized_linear(h, w, s, c, impl='ref')
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    fun, dir_ = normalized_linear(h, w, s, c, flg_train=True, impl='ref')
    torch.testing.assert_close(fun, out, rtol=0, atol=0)
    torch.testing.assert_close(dir_, out, rtol=0, atol=0)


@pytest.mark.parametrize('mode', MODES)
def test_ref_fun_grad_reaches_h_and_scale_only(mode):
    h, w, s, c = _inputs(mode)
    fun, _ = _normalized_linear_ref(h, w, s, c, flg_train=True)
    gh, gw, gs = _grads(fun, (h, w, s), torch.randn_like(fun))
    assert gh is not None and gs is not None and gw is None


@pytest.mark.parametrize('mode', MODES)
def test_ref_dir_grad_reaches_only_weight(mode):
    h, w, s, c = _inputs(mode)
    _, dir_ = _normalized_linear_ref(h, w, s, c, flg_train=True)
    gh, gw, gs = _grads(dir_, (h, w, s), torch.randn_like(dir_))
    assert gw is not None and gh is None and gs is None


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('flg_train', [False, True])
def test_ref_weight_grad_is_projected_closed_form(mode, flg_train):
    h, w, s, c = _inputs(mode)
    out = _normalized_linear_ref(h, w, s, c, flg_train=flg_train)
    out = out[1] if flg_train else out
    g = torch.randn_like(out)
    (gw,) = torch.autograd.grad((out * g).sum(), w)
    np.testing.assert_allclose(gw.numpy(), _numpy_weight_grad(h, w, s, c, g), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('mode', MODES)
def test_ref_gradcheck_float64(mode):
    h, w, s, c = _inputs(mode)
    assert torch.autograd.gradcheck(lambda h, w, s: _normalized_linear_ref(h, w, s, c), (h, w, s))
    assert torch.autograd.gradcheck(lambda h, s: _normalized_linear_ref(h, w, s, c, True)[0], (h, s))
    assert torch.autograd.gradcheck(lambda w: _normalized_linear_ref(h, w, s, c, True)[1], (w,))


def test_class_ids_of_other_integer_dtype_and_flat_scale_are_accepted():
    h, w, s, c = _inputs('class', class_scale_2d=False)
    out = normalized_linear(h, w, s, c.int(), impl='ref')
    np.testing.assert_allclose(out.detach().numpy(), _numpy_out(h, w, s, c), rtol=1e-12)


def _bad_inputs():
    h, w, s, _ = _inputs('row')
    _, wc, sc, c = _inputs('class')
    return [
        ('h_not_2d', (h[0], w, s, None), ValueError, 'h of shape'),
        ('d_mismatch', (h, w[:, :3], s, None), ValueError, 'weight must be'),
        ('scale_shape', (h, w, s[:2], None), ValueError, 'scale must have shape'),
        ('scale_2d_per_row', (h, w, s.view(-1, 1), None), ValueError, 'scale must have shape'),
        ('dtype_mismatch', (h.float(), w, s, None), TypeError, 'share one floating dtype'),
        ('float_class_ids', (h, wc, sc, c.double()), TypeError, 'integer class_ids'),
        ('class_ids_out_of_range', (h, wc, sc, c + 10), ValueError, 'class ids in'),
        ('negative_class_ids', (h, wc, sc, c - 10), ValueError, 'class ids in'),
        ('class_ids_shape', (h, wc, sc, c[:3]), ValueError, 'class_ids must have shape'),
    ]


@pytest.mark.parametrize('case', _bad_inputs(), ids=lambda case: case[0])
def test_bad_inputs_raise_clear_errors(case):
    _, args, err, match = case
    with pytest.raises(err, match=match):
        normalized_linear(*args)


def test_impl_cuda_on_cpu_tensors_raises():
    h, w, s, _ = _inputs('row')
    with pytest.raises(RuntimeError, match="impl='cuda'"):
        normalized_linear(h, w, s, impl='cuda')


# ---- the registered ops and their C++ autograd, on CPU (composite kernel; needs the extension built) ----

@pytest.fixture(scope='module')
def op_loaded():
    """Loads (building once if needed) the extension; CPU tests then run its C++ autograd on the composite kernel."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        if not load_op('normalized_linear'):
            pytest.skip(f'extension not built: {op_status()["normalized_linear"].reason}')
    return torch.ops.san_ext


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('flg_train', [False, True])
def test_op_matches_ref_values_and_grads_on_cpu(op_loaded, mode, flg_train):
    h, w, s, c = _inputs(mode)
    op = op_loaded.normalized_linear_san if flg_train else op_loaded.normalized_linear
    outs, refs = op(h, w, s, c), _normalized_linear_ref(h, w, s, c, flg_train)
    outs, refs = (outs, refs) if flg_train else ((outs,), (refs,))
    for out, ref in zip(outs, refs):
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        g = torch.randn_like(out)
        for a, b in zip(_grads(out, (h, w, s), g), _grads(ref, (h, w, s), g)):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('mode', MODES)
def test_op_gradcheck_and_double_backward_keep_routing(op_loaded, mode):
    h, w, s, c = _inputs(mode)
    plain = lambda h, w, s: op_loaded.normalized_linear(h, w, s, c)  # noqa: E731
    fun = lambda h, s: op_loaded.normalized_linear_san(h, w, s, c)[0]  # noqa: E731
    dir_ = lambda w: op_loaded.normalized_linear_san(h, w, s, c)[1]  # noqa: E731
    for fn, args in ((plain, (h, w, s)), (fun, (h, s)), (dir_, (w,))):
        assert torch.autograd.gradcheck(fn, args)
        assert torch.autograd.gradgradcheck(fn, args)


def test_op_runs_in_inference_mode_and_rejects_bad_inputs(op_loaded):
    h, w, s, c = _inputs('class')
    with torch.inference_mode():
        fun, dir_ = op_loaded.normalized_linear_san(h, w, s, c)
    torch.testing.assert_close(fun, _normalized_linear_ref(h, w, s, c).detach())
    with pytest.raises(TypeError, match='int64'):
        op_loaded.normalized_linear(h, w, s, c.int())
    with pytest.raises(ValueError, match='h must be'):
        op_loaded.normalized_linear(h[0], w, s, None)


class _LooksLikeCuda(torch.Tensor):
    """A CPU tensor that answers is_cuda=True: drives SANLinear's fused branch through the op's CPU kernel."""

    @property
    def is_cuda(self):
        return True


def _graph_has_op(t):
    todo, seen = [t.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if 'NormalizedLinearFunction' in node.name():
            return True
        todo.extend(nxt for nxt, _ in node.next_functions)
    return False


@pytest.mark.parametrize('shape', [(5, 6), (2, 3, 6), (6,)])
def test_sanlinear_fused_branch_equals_plain_path(op_loaded, shape):
    torch.manual_seed(0)
    layer = SANLinear(6, 3, bias=True, positive_scale=True)
    with torch.no_grad():
        layer.bias.normal_()
        layer.weight.mul_(2.0)
        layer.scale.neg_()
    x = torch.randn(shape, dtype=torch.float64)
    layer.double()
    results = []
    for x_in in (x.clone().requires_grad_(), x.clone().as_subclass(_LooksLikeCuda).requires_grad_()):
        layer.zero_grad(set_to_none=True)
        fun, dir_ = layer(x_in, flg_train=True)
        plain = layer(x_in)
        assert isinstance(x_in, _LooksLikeCuda) == _graph_has_op(fun) == _graph_has_op(plain)
        (fun.square().sum() + 2 * dir_.sum() + plain.sin().sum()).backward()
        results.append([fun, dir_, plain, x_in.grad, layer.weight.grad, layer.scale.grad, layer.bias.grad])
    for a, b in zip(*results):
        b = torch.Tensor.as_subclass(b, torch.Tensor)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_sanlinear_on_cpu_never_calls_the_op(op_loaded):
    layer = SANLinear(6, 3)
    out = layer(torch.randn(4, 6, requires_grad=True))
    assert not _graph_has_op(out)


# ---- CUDA ----

CUDA_SHAPES = {  # (n, d, rows): a small odd case, SAN's conditional head, the unconditional head, a wide output
    'row': [(7, 33, 5), (64 * 25, 8192, 1), (300, 512, 1000)],
    'class': [(7, 33, 5), (64 * 25, 64, 1000)],
}
TOLS = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 4e-2}


def _assert_near(a, b, tol):
    assert a.shape == b.shape and a.dtype == b.dtype
    a, b = a.double(), b.double()
    err = (a - b).abs().max().item() if a.numel() else 0.0
    assert err <= tol * (1.0 + b.abs().max().item()), f'max error {err:.3g}'


@gpu
@pytest.mark.parametrize('mode,shape', [(m, s) for m in MODES for s in CUDA_SHAPES[m]], ids=str)
@pytest.mark.parametrize('flg_train', [False, True])
@pytest.mark.parametrize('dtype', list(TOLS), ids=str)
def test_cuda_matches_ref_forward_and_backward(mode, shape, flg_train, dtype):
    n, d, rows = shape
    h, w, s, c = _inputs(mode, n, d, rows, dtype=dtype, device='cuda')
    hr, wr, sr = (t.detach().double().requires_grad_() for t in (h, w, s))  # float64 reference on the same values
    outs = normalized_linear(h, w, s, c, flg_train=flg_train, impl='cuda')
    refs = _normalized_linear_ref(hr, wr, sr, c, flg_train)
    outs, refs = (outs, refs) if flg_train else ((outs,), (refs,))
    for out, ref in zip(outs, refs):
        _assert_near(out, ref.to(dtype), TOLS[dtype])
        g = torch.randn_like(ref)
        got, want = _grads(out, (h, w, s), g.to(dtype)), _grads(ref, (hr, wr, sr), g)
        for a, b in zip(got, want):
            assert (a is None) == (b is None)
            if a is not None:
                _assert_near(a, b.to(dtype), TOLS[dtype])


@gpu
@pytest.mark.parametrize('mode', MODES)
def test_cuda_gradcheck_float64(mode):
    h, w, s, c = _inputs(mode, device='cuda')
    tol = 1e-12 if mode == 'class' else 0.0  # class rows scatter with atomics: reentrant only up to rounding
    plain = lambda h, w, s: normalized_linear(h, w, s, c, impl='cuda')  # noqa: E731
    fun = lambda h, s: normalized_linear(h, w, s, c, flg_train=True, impl='cuda')[0]  # noqa: E731
    dir_ = lambda w: normalized_linear(h, w, s, c, flg_train=True, impl='cuda')[1]  # noqa: E731
    for fn, args in ((plain, (h, w, s)), (fun, (h, s)), (dir_, (w,))):
        assert torch.autograd.gradcheck(fn, args, nondet_tol=tol)
        assert torch.autograd.gradgradcheck(fn, args, nondet_tol=tol)


@gpu
@pytest.mark.parametrize('flg_train', [False, True])
def test_cuda_sanlinear_same_with_and_without_op(flg_train, monkeypatch):
    assert load_op('normalized_linear')
    torch.manual_seed(0)
    layer = SANLinear(512, 4, bias=True).cuda()
    x = torch.randn(8, 25, 512, device='cuda')
    results = []
    for use_op in (True, False):
        if not use_op:
            monkeypatch.setattr(san_layers, '_registered_op', lambda name: None)
        layer.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_()
        out = layer(xi, flg_train=flg_train)
        outs = out if flg_train else (out,)
        assert all(_graph_has_op(o) == use_op for o in outs)
        sum(o.square().sum() * (k + 1) for k, o in enumerate(outs)).backward()
        results.append([*outs, xi.grad, layer.weight.grad, layer.scale.grad, layer.bias.grad])
    for a, b in zip(*results):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@gpu
def test_cuda_layer_uses_op_without_torch_utils():
    assert load_op('normalized_linear')
    path = Path(op_status()['normalized_linear'].path)
    lib = str(path if path.is_file() else sorted(path.glob('*.so'))[0])
    code = textwrap.dedent(f'''
        import sys, torch
        torch.ops.load_library({lib!r})
        from san_ext.layers import SANLinear
        assert not any(m.split('.')[0] == 'torch_utils' for m in sys.modules), 'torch_utils was imported'
        layer = SANLinear(64, 1).cuda()
        x = torch.randn(10, 64, device='cuda', requires_grad=True)
        fun, dir_ = layer(x, flg_train=True)
        assert 'NormalizedLinearFunction' in fun.grad_fn.name(), fun.grad_fn.name()
        dir_.sum().backward()
        assert x.grad is None and layer.scale.grad is None and layer.weight.grad.abs().sum() > 0
        print('ok')
    ''')
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and 'ok' in proc.stdout, proc.stderr[-3000:]

