"""``python -m san_ext.bench.ops``: custom ops, CUDA kernel vs PyTorch reference, at StyleGAN-XL shapes.

Times forward and forward+backward of upfirdn2d, bias_act, filtered_lrelu and the fused SAN projection
(normalized_linear), reports the speed-up of the CUDA path over the reference measured in the same run, and the
achieved bandwidth (minimum bytes an op must move / time) against the GPU's peak and against a measured device copy.
Shapes (batch 8 per GPU, the ImageNet recipe's ``--batch-gpu``): a StyleGAN3-T synthesis layer of the 256² head
(148² margins, 12-tap up/down filters), the D-input blur (13 taps, sigma 2), and the SAN heads of the projected D
(conditional: 25 positions x batch 64, 64-d, 1000 classes; unconditional: 512x4x4 kernel, one output).
On a machine without a GPU only the reference column is measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import click
import torch

from .common import median_seconds, write_json

# Peak DRAM bandwidth in GB/s by device-name fragment (vendor data sheets); --peak-gbs overrides.
PEAK_GBS = {'H200': 4800.0, 'H100 SXM': 3350.0, 'H100 NVL': 3900.0, 'H100 PCIe': 2000.0, 'H100': 3350.0,
            'A100-SXM4-80GB': 2039.0, 'A100 80GB PCIe': 1935.0, 'A100': 1555.0, 'L40S': 864.0, 'A10': 600.0,
            'RTX 4090': 1008.0, 'V100': 900.0}


@dataclass(frozen=True)
class Case:
    """One op at one shape: ``make(device, impl, dtype)`` returns (run, the inputs that take gradients)."""

    op: str
    shape: str
    make: Callable


def _upfirdn_case(shape, up, down, taps):
    def make(device, impl, dtype):
        from torch_utils.ops.upfirdn2d import setup_filter, upfirdn2d
        x = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
        f = setup_filter(torch.ones(taps), device=device, separable=True)
        pad = (taps - 1) // 2
        run = lambda: upfirdn2d(x, f, up=up, down=down, padding=pad, gain=up * up, impl=impl)  # noqa: E731
        return run, [x]
    return make


def _bias_act_case(shape):
    def make(device, impl, dtype):
        from torch_utils.ops.bias_act import bias_act
        x = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
        b = torch.randn(shape[1], device=device, dtype=dtype, requires_grad=True)
        return (lambda: bias_act(x, b, act='lrelu', clamp=256.0, impl=impl)), [x, b]
    return make


def _filtered_lrelu_case(shape, taps=12):
    def make(device, impl, dtype):
        from torch_utils.ops.filtered_lrelu import filtered_lrelu
        from torch_utils.ops.upfirdn2d import setup_filter
        x = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
        b = torch.randn(shape[1], device=device, dtype=dtype, requires_grad=True)
        f = setup_filter(torch.ones(taps), device=device, separable=True)
        pad = taps - 1
        run = lambda: filtered_lrelu(x, f, f, b, up=2, down=2, padding=pad, clamp=256.0, impl=impl)  # noqa: E731
        return run, [x, b]
    return make


def _san_case(n, d, rows, per_class):
    def make(device, impl, dtype):
        from torch_utils.ops.normalized_linear import normalized_linear
        h = torch.randn(n, d, device=device, dtype=dtype, requires_grad=True)
        w = torch.randn(rows, d, device=device, dtype=dtype, requires_grad=True)
        s = torch.rand(rows, device=device, dtype=dtype, requires_grad=True)
        c = torch.randint(rows, (n,), device=device) if per_class else None

        def run():
            fun, dir_ = normalized_linear(h, w, s, class_ids=c, flg_train=True, impl=impl)
            return torch.stack([fun, dir_])
        return run, [h, w, s]
    return make


def build_cases(batch: int = 8) -> list[Case]:
    """The benchmark's cases at ``batch`` images per GPU (8 in the ImageNet recipe)."""
    b, n = batch, batch * 8 * 25  # SAN heads: 25 logit positions for 8x the per-GPU batch (both passes, 4 discs)
    return [
        Case('upfirdn2d', f'up2 12tap [{b},256,148,148]', _upfirdn_case((b, 256, 148, 148), 2, 1, 12)),
        Case('upfirdn2d', f'down2 12tap [{b},256,296,296]', _upfirdn_case((b, 256, 296, 296), 1, 2, 12)),
        Case('upfirdn2d', f'blur 13tap [{b},3,256,256]', _upfirdn_case((b, 3, 256, 256), 1, 1, 13)),
        Case('bias_act', f'lrelu [{b},256,296,296]', _bias_act_case((b, 256, 296, 296))),
        Case('filtered_lrelu', f'up2/down2 [{b},256,148,148]', _filtered_lrelu_case((b, 256, 148, 148))),
        Case('normalized_linear', f'cond {n}x64, 1000 cls', _san_case(n, 64, 1000, True)),
        Case('normalized_linear', f'uncond {n}x8192, 1 out', _san_case(n, 8192, 1, False)),
    ]


def _measure(case: Case, device: str, impl: str, dtype, warmup: int, repeats: int) -> dict:
    run, leaves = case.make(device, impl, dtype)
    out = run()
    grad = torch.randn_like(out)
    nbytes_fwd = sum(t.numel() * t.element_size() for t in leaves) + out.numel() * out.element_size()

    def fwd():
        with torch.no_grad():
            run()

    def fwd_bwd():
        torch.autograd.grad(run(), leaves, grad)
    return dict(fwd_s=median_seconds(fwd, device, warmup, repeats),
                fwdbwd_s=median_seconds(fwd_bwd, device, warmup, repeats),
                bytes_fwd=nbytes_fwd, bytes_fwdbwd=2 * nbytes_fwd + sum(t.numel() * t.element_size() for t in leaves))


def _copy_bandwidth(device: str) -> float:
    x = torch.empty(256 * 2 ** 20, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    seconds = median_seconds(lambda: y.copy_(x), device, 3, 10)
    return 2 * x.numel() / seconds / 1e9


def _peak(device: str, override: float | None) -> float | None:
    if override or device != 'cuda':
        return override
    name = torch.cuda.get_device_name()
    return next((gbs for key, gbs in PEAK_GBS.items() if key in name), None)


def run_bench(device: str, dtype, warmup: int, repeats: int, ops: list[str], peak_gbs: float | None,
              batch: int = 8) -> dict:
    """Measure every case of ``ops`` with the reference and (on a GPU) the CUDA path; returns rows and machine info."""
    rows = []
    for case in (c for c in build_cases(batch) if c.op in ops):
        row = dict(op=case.op, shape=case.shape, ref=_measure(case, device, 'ref', dtype, warmup, repeats))
        if device == 'cuda':
            row['cuda'] = _measure(case, device, 'cuda', dtype, warmup, repeats)
            row['speedup_fwd'] = row['ref']['fwd_s'] / row['cuda']['fwd_s']
            row['speedup_fwdbwd'] = row['ref']['fwdbwd_s'] / row['cuda']['fwdbwd_s']
        rows.append(row)
    gpu = torch.cuda.get_device_name() if device == 'cuda' else None
    return dict(device=device, gpu=gpu, dtype=str(dtype), torch=torch.__version__, peak_gbs=_peak(device, peak_gbs),
                copy_gbs=_copy_bandwidth(device), batch=batch, rows=rows)


def format_table(result: dict) -> str:
    """Markdown table: times in ms, speed-ups, and achieved GB/s (percent of peak where known)."""
    peak = result['peak_gbs']
    lines = ['| op | shape | ref fwd ms | ref f+b ms | cuda fwd ms | cuda f+b ms | speed-up fwd | speed-up f+b | '
             'cuda fwd GB/s |', '|' + '---|' * 9]
    for r in result['rows']:
        ref, cu = r['ref'], r.get('cuda')
        cells = [r['op'], r['shape'], f'{ref["fwd_s"] * 1e3:.2f}', f'{ref["fwdbwd_s"] * 1e3:.2f}']
        if cu:
            gbs = cu['bytes_fwd'] / cu['fwd_s'] / 1e9
            pct = f' ({100 * gbs / peak:.0f}%)' if peak else ''
            cells += [f'{cu["fwd_s"] * 1e3:.2f}', f'{cu["fwdbwd_s"] * 1e3:.2f}', f'{r["speedup_fwd"]:.1f}x',
                      f'{r["speedup_fwdbwd"]:.1f}x', f'{gbs:.0f}{pct}']
        else:
            cells += ['n/a'] * 5
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


@click.command(help=__doc__)
@click.option('--device', type=click.Choice(['auto', 'cuda', 'cpu']), default='auto', show_default=True,
              help='Where to run; auto picks the GPU when there is one.')
@click.option('--dtype', type=click.Choice(['float32', 'float16']), default='float32', show_default=True)
@click.option('--ops', default='upfirdn2d,bias_act,filtered_lrelu,normalized_linear', show_default=True,
              help='Comma-separated ops to time.')
@click.option('--warmup', type=click.IntRange(0), default=3, show_default=True, help='Untimed calls first.')
@click.option('--repeats', type=click.IntRange(1), default=10, show_default=True, help='Timed calls (median).')
@click.option('--batch', type=click.IntRange(1), default=8, show_default=True,
              help='Images per GPU in the shapes (8 in the ImageNet recipe; 1 for a quick CPU run).')
@click.option('--peak-gbs', type=float, default=None, help='Peak memory bandwidth in GB/s (default: by GPU name).')
@click.option('--out', type=click.Path(dir_okay=False), default='runs/bench_ops.json', show_default=True,
              help='JSON output path.')
def main(device, dtype, ops, warmup, repeats, batch, peak_gbs, out):
    device = ('cuda' if torch.cuda.is_available() else 'cpu') if device == 'auto' else device
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.BadParameter('no CUDA GPU visible', param_hint='--device')
    names = [n.strip() for n in ops.split(',') if n.strip()]
    known = sorted({c.op for c in build_cases(1)})
    if set(names) - set(known):
        raise click.BadParameter(f'unknown ops {sorted(set(names) - set(known))}; known: {known}', param_hint='--ops')
    result = run_bench(device, getattr(torch, dtype), warmup, repeats, names, peak_gbs, batch)
    peak = result['peak_gbs'] or 'unknown'
    click.echo(f'device: {result["gpu"] or "cpu"}, {dtype}, peak {peak} GB/s, measured copy '
               f'{result["copy_gbs"]:.0f} GB/s')
    click.echo(format_table(result))
    click.echo(f'wrote {write_json(out, result)}')


if __name__ == '__main__':
    main()
