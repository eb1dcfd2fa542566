// normalized_linear CUDA kernels: the SAN projection s * <omega / ||omega||, h> (Takida et al., ICLR 2024, Eq. 7).
// san-ext's own code (MIT). Accumulation in float32 for float16/bfloat16/float32 inputs, float64 for float64.
//
// Why this split (memory bandwidth is the limit for SAN heads):
// - Per output row (h [N, D], weight [O, D]): the product is a GEMM, or for O = 1 (unconditional head, D = 8192) a
//   GEMV; cuBLAS already streams h at full bandwidth, and for large O a hand-written kernel would lose to it. So the
//   forward is one small kernel over weight (norm of each row, computed once, folded with the scale into
//   W_eff = s * w / ||w||) and one at::mm(h, W_eff^T). The backward is grad_h = g W_eff (a GEMM; for O = 1 an
//   elementwise outer product), one GEMM for G = [g_fun | g_dir]^T h (both cotangents stacked: one pass over h), and
//   one row kernel turning G into grad_scale and the projected grad_weight, reusing the forward's row norms.
// - Per class row (class_ids [N], weight [C, D], D = 64): a gather-dot-product that GEMM cannot express. One warp per
//   sample reads h_n and w_{c_n} once, computing the dot product and the row norm in the same pass (the row is read
//   anyway, so its norm costs no extra memory traffic). The backward is one kernel: grad_h written per sample,
//   grad_scale and grad_weight scattered with float atomics into per-class accumulators (not bitwise deterministic;
//   flagged to torch.use_deterministic_algorithms).
#include "common.h"

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <array>
#include <optional>
#include <tuple>

using at::Tensor;
using OptTensor = std::optional<Tensor>;

namespace {

constexpr double kEps = 1e-12;     // omega = w / max(||w||, eps), as F.normalize
constexpr int kWarp = 32;
constexpr int kMaxRowThreads = 256;
constexpr int kSampleThreads = 256;  // per-class kernels: one warp per sample, 8 samples per block

__device__ __forceinline__ float dev_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double dev_sqrt(double x) { return sqrt(x); }

// 1 / max(||w||, eps) from the sum of squares; NaN propagates as in clamp_min.
template <typename acc_t>
__device__ __forceinline__ acc_t inv_norm_of(acc_t sumsq, acc_t eps) {
    const acc_t norm = dev_sqrt(sumsq);
    return acc_t(1) / (norm < eps ? eps : norm);
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int offset = kWarp / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, every thread calls it); the result is returned to all threads.
template <typename T>
__device__ T block_sum(T v) {
    __shared__ T partial[kMaxRowThreads / kWarp];
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = warp_sum(lane < warps ? partial[lane] : T(0));
        if (lane == 0) partial[0] = v;
    }
    __syncthreads();
    const T total = partial[0];
    __syncthreads();  // the next call may overwrite partial
    return total;
}

// One block per weight row r: inv[r] = 1 / max(||w_r||, eps) (read from inv_in when given, else computed and
// written to inv_out) and, when weff is given, weff[r] = s_r * inv[r] * w_r (the GEMM operand).
template <typename scalar_t, typename acc_t>
__global__ void row_norm_kernel(const scalar_t* __restrict__ w, const scalar_t* __restrict__ s,
                                const acc_t* __restrict__ inv_in, int64_t D, acc_t eps, acc_t* __restrict__ inv_out,
                                scalar_t* __restrict__ weff) {
    const int64_t r = blockIdx.x;
    const scalar_t* row = w + r * D;
    acc_t inv;
    if (inv_in != nullptr) {
        inv = inv_in[r];
    } else {
        acc_t sumsq = 0;
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
            const acc_t v = static_cast<acc_t>(row[d]);
            sumsq += v * v;
        }
        inv = inv_norm_of(block_sum(sumsq), eps);
        if (threadIdx.x == 0 && inv_out != nullptr) inv_out[r] = inv;
    }
    if (weff == nullptr) return;
    const acc_t f = static_cast<acc_t>(s[r]) * inv;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
        weff[r * D + d] = static_cast<scalar_t>(static_cast<acc_t>(row[d]) * f);
}

// One block per weight row r of the per-output-row backward, from the GEMM rows G = g^T h:
// grad_s[r] = inv_r <w_r, G_hs[r]> and grad_w[r] = s_r inv_r (G_w[r] - w_hat_r <w_hat_r, G_w[r]>).
template <typename scalar_t, typename acc_t>
__global__ void row_grad_kernel(const scalar_t* __restrict__ w, const scalar_t* __restrict__ s,
                                const acc_t* __restrict__ inv_in, const scalar_t* __restrict__ G_hs,
                                const scalar_t* __restrict__ G_w, int64_t D, scalar_t* __restrict__ grad_s,
                                scalar_t* __restrict__ grad_w) {
    const int64_t r = blockIdx.x;
    const scalar_t* row = w + r * D;
    const acc_t inv = inv_in[r];
    if (grad_s != nullptr) {
        acc_t a = 0;
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
            a += static_cast<acc_t>(row[d]) * static_cast<acc_t>(G_hs[r * D + d]);
        a = block_sum(a);
        if (threadIdx.x == 0) grad_s[r] = static_cast<scalar_t>(inv * a);
    }
    if (grad_w != nullptr) {
        acc_t b = 0;
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
            b += static_cast<acc_t>(row[d]) * static_cast<acc_t>(G_w[r * D + d]);
        const acc_t f = static_cast<acc_t>(s[r]) * inv, c = inv * inv * block_sum(b);
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
            const acc_t g = static_cast<acc_t>(G_w[r * D + d]);
            grad_w[r * D + d] = static_cast<scalar_t>(f * (g - c * static_cast<acc_t>(row[d])));
        }
    }
}

// One warp per sample n, c = ids[n]: out[n] = s_c <w_c, h_n> inv_c and inv_out[n] = inv_c = 1 / max(||w_c||, eps).
template <typename scalar_t, typename acc_t>
__global__ void class_forward_kernel(const scalar_t* __restrict__ h, const scalar_t* __restrict__ w,
                                     const scalar_t* __restrict__ s, const int64_t* __restrict__ ids, int64_t N,
                                     int64_t D, int64_t C, acc_t eps, scalar_t* __restrict__ out,
                                     acc_t* __restrict__ inv_out) {
    const int64_t n = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
    const int lane = threadIdx.x % kWarp;
    if (n >= N) return;  // the whole warp leaves together
    const int64_t c = ids[n];
    CUDA_KERNEL_ASSERT(c >= 0 && c < C);
    const scalar_t* x = h + n * D;
    const scalar_t* row = w + c * D;
    acc_t dot = 0, sumsq = 0;
    for (int64_t d = lane; d < D; d += kWarp) {
        const acc_t wv = static_cast<acc_t>(row[d]);
        dot += wv * static_cast<acc_t>(x[d]);
        sumsq += wv * wv;
    }
    dot = warp_sum(dot);
    sumsq = warp_sum(sumsq);
    if (lane == 0) {
        const acc_t inv = inv_norm_of(sumsq, eps);
        out[n] = static_cast<scalar_t>(static_cast<acc_t>(s[c]) * dot * inv);
        inv_out[n] = inv;
    }
}

// One warp per sample n (c = ids[n], p = <w_hat_c, h_n>):
// grad_h[n] = g_hs[n] s_c w_hat_c;  grad_s[c] += g_hs[n] p;  grad_w[c] += g_w[n] s_c inv_c (h_n - w_hat_c p).
template <typename scalar_t, typename acc_t>
__global__ void class_backward_kernel(const scalar_t* __restrict__ g_hs, const scalar_t* __restrict__ g_w,
                                      const scalar_t* __restrict__ h, const scalar_t* __restrict__ w,
                                      const scalar_t* __restrict__ s, const int64_t* __restrict__ ids,
                                      const acc_t* __restrict__ inv_in, int64_t N, int64_t D, int64_t C,
                                      scalar_t* __restrict__ grad_h, acc_t* __restrict__ grad_s_acc,
                                      acc_t* __restrict__ grad_w_acc) {
    const int64_t n = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
    const int lane = threadIdx.x % kWarp;
    if (n >= N) return;
    const int64_t c = ids[n];
    CUDA_KERNEL_ASSERT(c >= 0 && c < C);
    const scalar_t* x = h + n * D;
    const scalar_t* row = w + c * D;
    const acc_t inv = inv_in[n], sc = static_cast<acc_t>(s[c]);
    acc_t p = 0;
    if (grad_s_acc != nullptr || grad_w_acc != nullptr) {
        for (int64_t d = lane; d < D; d += kWarp) p += static_cast<acc_t>(row[d]) * static_cast<acc_t>(x[d]);
        p = warp_sum(p) * inv;
    }
    if (grad_h != nullptr) {
        const acc_t f = static_cast<acc_t>(g_hs[n]) * sc * inv;
        for (int64_t d = lane; d < D; d += kWarp)
            grad_h[n * D + d] = static_cast<scalar_t>(f * static_cast<acc_t>(row[d]));
    }
    if (grad_s_acc != nullptr && lane == 0) atomicAdd(grad_s_acc + c, static_cast<acc_t>(g_hs[n]) * p);
    if (grad_w_acc != nullptr) {
        const acc_t f = static_cast<acc_t>(g_w[n]) * sc * inv, q = inv * p;
        for (int64_t d = lane; d < D; d += kWarp)
            atomicAdd(grad_w_acc + c * D + d, f * (static_cast<acc_t>(x[d]) - q * static_cast<acc_t>(row[d])));
    }
}

int row_threads(int64_t D) {
    const int64_t t = (D + kWarp - 1) / kWarp * kWarp;
    return static_cast<int>(t < kWarp ? kWarp : (t > kMaxRowThreads ? kMaxRowThreads : t));
}

unsigned int sample_blocks(int64_t N) {
    constexpr int64_t per_block = kSampleThreads / kWarp;
    return static_cast<unsigned int>((N + per_block - 1) / per_block);
}

template <typename T>
T* ptr_or_null(const Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; }

// weff = s * w / ||w|| row by row, with inv given (backward) or computed into inv_out (forward).
Tensor scaled_rows(const Tensor& weight, const Tensor& scale, const Tensor& inv_in, const Tensor& inv_out) {
    Tensor weff = at::empty_like(weight);
    const int64_t R = weight.size(0), D = weight.size(1);
    if (R == 0) return weff;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "normalized_linear_rows", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        row_norm_kernel<scalar_t, acc_t><<<static_cast<unsigned int>(R), row_threads(D), 0,
                                           c10::cuda::getCurrentCUDAStream()>>>(
            weight.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(), ptr_or_null<acc_t>(inv_in), D,
            static_cast<acc_t>(kEps), ptr_or_null<acc_t>(inv_out), weff.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return weff;
}

std::tuple<Tensor, Tensor, Tensor> row_backward(const OptTensor& g_hs, const OptTensor& g_w, const Tensor& h,
                                                const Tensor& weight, const Tensor& scale, const Tensor& inv,
                                                bool want_h, bool want_w, bool want_s) {
    const int64_t R = weight.size(0), D = weight.size(1);
    Tensor grad_h, grad_w, grad_s;
    if (want_h) {  // [N, O] x [O, D]; for O = 1 an outer product, which an elementwise kernel streams best
        const Tensor weff = scaled_rows(weight, scale, inv, Tensor());
        grad_h = R == 1 ? at::mul(*g_hs, weff) : at::mm(*g_hs, weff);
    }
    if (!want_w && !want_s) return {grad_h, grad_w, grad_s};
    Tensor G_hs, G_w;  // [O, D] each; one GEMM (one pass over h) for both cotangents
    if (want_w && want_s && !g_hs->is_same(*g_w)) {
        const Tensor G = at::mm(at::cat({*g_hs, *g_w}, 1).t(), h).contiguous();  // [2O, D]
        G_hs = G.narrow(0, 0, R);
        G_w = G.narrow(0, R, R);
    } else {
        const Tensor G = at::mm((want_s ? *g_hs : *g_w).t(), h).contiguous();
        if (want_s) G_hs = G;
        if (want_w) G_w = G;
    }
    if (want_s) grad_s = at::empty({R}, scale.options());
    if (want_w) grad_w = at::empty_like(weight);
    if (R > 0) {
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "normalized_linear_row_grad", [&] {
            using acc_t = at::opmath_type<scalar_t>;
            row_grad_kernel<scalar_t, acc_t><<<static_cast<unsigned int>(R), row_threads(D), 0,
                                               c10::cuda::getCurrentCUDAStream()>>>(
                weight.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(), inv.data_ptr<acc_t>(),
                ptr_or_null<scalar_t>(G_hs), ptr_or_null<scalar_t>(G_w), D, ptr_or_null<scalar_t>(grad_s),
                ptr_or_null<scalar_t>(grad_w));
            C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
    }
    if (want_s) grad_s = grad_s.view(scale.sizes());
    return {grad_h, grad_w, grad_s};
}

std::tuple<Tensor, Tensor, Tensor> class_backward(const OptTensor& g_hs, const OptTensor& g_w, const Tensor& h,
                                                  const Tensor& weight, const Tensor& scale, const Tensor& ids,
                                                  const Tensor& inv, bool want_h, bool want_w, bool want_s) {
    const int64_t N = h.size(0), D = h.size(1), C = weight.size(0);
    const auto acc = at::toOpMathType(h.scalar_type());
    Tensor grad_h = want_h ? at::empty_like(h) : Tensor();
    Tensor gs_acc = want_s ? at::zeros({C}, h.options().dtype(acc)) : Tensor();
    Tensor gw_acc = want_w ? at::zeros({C, D}, h.options().dtype(acc)) : Tensor();
    if (want_s || want_w) at::globalContext().alertNotDeterministic("normalized_linear_backward_cuda (class rows)");
    if (N > 0 && (want_h || want_s || want_w)) {
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "normalized_linear_class_bwd", [&] {
            using acc_t = at::opmath_type<scalar_t>;
            class_backward_kernel<scalar_t, acc_t><<<sample_blocks(N), kSampleThreads, 0,
                                                     c10::cuda::getCurrentCUDAStream()>>>(
                (want_h || want_s) ? g_hs->data_ptr<scalar_t>() : nullptr,
                want_w ? g_w->data_ptr<scalar_t>() : nullptr,
                h.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(),
                ids.data_ptr<int64_t>(), inv.data_ptr<acc_t>(), N, D, C, ptr_or_null<scalar_t>(grad_h),
                ptr_or_null<acc_t>(gs_acc), ptr_or_null<acc_t>(gw_acc));
            C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
    }
    Tensor grad_s = want_s ? gs_acc.to(scale.scalar_type()).view(scale.sizes()) : Tensor();
    Tensor grad_w = want_w ? gw_acc.to(weight.scalar_type()) : Tensor();
    return {grad_h, grad_w, grad_s};
}

}  // namespace

std::tuple<Tensor, Tensor> normalized_linear_forward_cuda(const Tensor& h, const Tensor& weight, const Tensor& scale,
                                                          const OptTensor& class_ids) {
    const c10::cuda::CUDAGuard guard(h.device());
    const auto acc = at::toOpMathType(h.scalar_type());
    if (!class_ids.has_value()) {
        Tensor inv = at::empty({weight.size(0)}, h.options().dtype(acc));
        const Tensor weff = scaled_rows(weight, scale, Tensor(), inv);
        return {at::mm(h, weff.t()), inv};  // [N, D] x [D, O]: cuBLAS, see the header comment
    }
    const int64_t N = h.size(0), D = h.size(1), C = weight.size(0);
    Tensor out = at::empty({N}, h.options());
    Tensor inv = at::empty({N}, h.options().dtype(acc));
    if (N == 0) return {out, inv};
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "normalized_linear_class_fwd", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        class_forward_kernel<scalar_t, acc_t><<<sample_blocks(N), kSampleThreads, 0,
                                                c10::cuda::getCurrentCUDAStream()>>>(
            h.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(),
            class_ids->data_ptr<int64_t>(), N, D, C, static_cast<acc_t>(kEps), out.data_ptr<scalar_t>(),
            inv.data_ptr<acc_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return {out, inv};
}

std::tuple<Tensor, Tensor, Tensor> normalized_linear_backward_cuda(const OptTensor& grad_hs, const OptTensor& grad_w,
                                                                   const Tensor& h, const Tensor& weight,
                                                                   const Tensor& scale, const OptTensor& class_ids,
                                                                   const Tensor& inv_norm, std::array<bool, 3> mask) {
    const c10::cuda::CUDAGuard guard(h.device());
    const bool has_hs = grad_hs.has_value() && grad_hs->defined(), has_w = grad_w.has_value() && grad_w->defined();
    const bool want_h = mask[0] && has_hs, want_w = mask[1] && has_w, want_s = mask[2] && has_hs;
    if (class_ids.has_value())
        return class_backward(grad_hs, grad_w, h, weight, scale, *class_ids, inv_norm, want_h, want_w, want_s);
    return row_backward(grad_hs, grad_w, h, weight, scale, inv_norm, want_h, want_w, want_s);
}
