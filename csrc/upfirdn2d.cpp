// upfirdn2d: upsample by zero insertion, pad, FIR filter, downsample -- input checks and dispatcher registration.
// Our own code (MIT); no StyleGAN2/3 kernel code. The kernel and its launcher live in upfirdn2d.cu.
//
// Semantics per axis (x along W, y along H), for an input of length L:
//   padded[j] = x[(j - pad0) / up] when (j - pad0) is a multiple of up in [0, L*up), else 0
//   y[i]      = sum_k padded[i*down + k] * g[k],   g = f flipped (true convolution) unless `flip`
//   out_len   = (L*up + pad0 + pad1 - taps) / down + 1
#include "common.h"

#include <c10/cuda/CUDAGuard.h>

#include <limits>

// Defined in upfirdn2d.cu. x: [N, C, H, W] contiguous; g: [fh, fw] contiguous correlation filter (already flipped
// and scaled by the gain), float32 (float64 when x is float64); y: [N, C, outH, outW] contiguous, same dtype as x.
void upfirdn2d_launch(const at::Tensor& x, const at::Tensor& g, at::Tensor& y, int64_t upx, int64_t upy,
                      int64_t downx, int64_t downy, int64_t padx0, int64_t pady0);

namespace {

// Output length along one axis; fails with the computed size when the padding leaves nothing.
int64_t out_length(const char* axis, int64_t len, int64_t up, int64_t down, int64_t pad0, int64_t pad1,
                   int64_t taps) {
    const int64_t span = len * up + pad0 + pad1 - taps;
    const int64_t floor_div = span >= 0 ? span / down : -((-span + down - 1) / down);  // Python's //
    TORCH_CHECK(span >= 0, "upfirdn2d: padding leaves an empty output along ", axis, ": (", len, "*", up, " + ",
                pad0, " + ", pad1, " - ", taps, ") // ", down, " + 1 = ", floor_div + 1,
                " (needs input*up + pad0 + pad1 >= filter taps)");
    return floor_div + 1;
}

at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                          int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, bool flip,
                          double gain) {
    SAN_CHECK_CUDA(x);
    SAN_CHECK_FLOATING(x);
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be 4-D [N, C, H, W], got shape ", x.sizes());
    TORCH_CHECK(f.dim() == 2, "upfirdn2d: f must be a 2-D filter [fh, fw] (apply a separable filter as two "
                "passes), got shape ", f.sizes());
    TORCH_CHECK(f.numel() > 0, "upfirdn2d: f must have at least one tap, got shape ", f.sizes());
    TORCH_CHECK(f.is_floating_point(), "upfirdn2d: f must be a floating-point tensor, got ", f.scalar_type());
    SAN_CHECK_SAME_DEVICE(x, f);
    TORCH_CHECK(upx >= 1 && upy >= 1, "upfirdn2d: up factors must be >= 1, got upx=", upx, ", upy=", upy);
    TORCH_CHECK(downx >= 1 && downy >= 1, "upfirdn2d: down factors must be >= 1, got downx=", downx,
                ", downy=", downy);
    constexpr int64_t kIntMax = std::numeric_limits<int>::max();
    TORCH_CHECK(upx <= kIntMax && upy <= kIntMax && downx <= kIntMax && downy <= kIntMax && f.size(0) <= kIntMax &&
                f.size(1) <= kIntMax, "upfirdn2d: up/down factors and filter taps must fit in 32 bits");

    const int64_t fh = f.size(0), fw = f.size(1);
    const int64_t out_h = out_length("y", x.size(2), upy, downy, pady0, pady1, fh);
    const int64_t out_w = out_length("x", x.size(3), upx, downx, padx0, padx1, fw);

    const c10::cuda::CUDAGuard guard(x.device());
    const at::Tensor xc = x.contiguous();
    // The kernel correlates; a true convolution (flip == false) correlates with the flipped filter.
    at::Tensor g = f.to(x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
    if (!flip) {
        g = g.flip({0, 1});
    }
    g = (g * gain).contiguous();
    at::Tensor y = at::empty({x.size(0), x.size(1), out_h, out_w}, xc.options());
    if (y.numel() == 0) {
        return y;
    }
    upfirdn2d_launch(xc, g, y, upx, upy, downx, downy, padx0, pady0);
    return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(san_ext, m) {
    m.def("upfirdn2d(Tensor x, Tensor f, int upx, int upy, int downx, int downy, int padx0, int padx1, int pady0, "
          "int pady1, bool flip, float gain) -> Tensor");
}

TORCH_LIBRARY_IMPL(san_ext, CUDA, m) {
    m.impl("upfirdn2d", &upfirdn2d_cuda);
}
