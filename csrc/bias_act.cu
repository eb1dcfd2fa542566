// bias_act CUDA kernels: y = clamp(act(x + b) * gain), and its gradient read off y (san-ext's own code, MIT).
// act ids: 0 linear, 1 relu, 2 lrelu. clamp < 0 disables clamping. Accumulation is in float (double for double).
#include "common.h"
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

namespace {

template <typename acc_t>
__device__ __forceinline__ acc_t activate(acc_t v, int act, acc_t alpha) {
    if (act == 1) return v > acc_t(0) ? v : acc_t(0);
    if (act == 2) return v > acc_t(0) ? v : v * alpha;
    return v;
}

template <typename scalar_t>
__global__ void bias_act_fwd_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ b,
                                    scalar_t* __restrict__ y, int64_t n, int64_t inner, int64_t channels, int act,
                                    float alpha, float gain, float clamp) {
    using acc_t = typename std::conditional<std::is_same<scalar_t, double>::value, double, float>::type;
    const int64_t stride = (int64_t)blockDim.x * gridDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        acc_t v = static_cast<acc_t>(x[i]);
        if (b != nullptr) v += static_cast<acc_t>(b[(i / inner) % channels]);
        v = activate<acc_t>(v, act, acc_t(alpha)) * acc_t(gain);
        if (clamp >= 0.f) v = v > acc_t(clamp) ? acc_t(clamp) : (v < -acc_t(clamp) ? -acc_t(clamp) : v);
        y[i] = static_cast<scalar_t>(v);
    }
}

template <typename scalar_t>
__global__ void bias_act_grad_kernel(const scalar_t* __restrict__ grad_y, const scalar_t* __restrict__ y,
                                     scalar_t* __restrict__ grad_x, int64_t n, int act, float alpha, float gain,
                                     float clamp) {
    using acc_t = typename std::conditional<std::is_same<scalar_t, double>::value, double, float>::type;
    const int64_t stride = (int64_t)blockDim.x * gridDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const acc_t yv = static_cast<acc_t>(y[i]);
        acc_t factor = acc_t(gain);
        if (act == 1) factor = yv > acc_t(0) ? factor : acc_t(0);
        if (act == 2) factor = yv > acc_t(0) ? factor : factor * acc_t(alpha);
        if (clamp >= 0.f && (yv >= acc_t(clamp) || yv <= -acc_t(clamp))) factor = acc_t(0);
        grad_x[i] = static_cast<scalar_t>(static_cast<acc_t>(grad_y[i]) * factor);
    }
}

int launch_blocks(int64_t n, int threads) {
    const int64_t blocks = (n + threads - 1) / threads;
    return static_cast<int>(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

}  // namespace

at::Tensor bias_act_fwd_cuda(const at::Tensor& x, const c10::optional<at::Tensor>& b, int64_t dim, int64_t act,
                             double alpha, double gain, double clamp) {
    SAN_CHECK_CUDA(x);
    SAN_CHECK_CONTIGUOUS(x);
    SAN_CHECK_FLOATING(x);
    TORCH_CHECK(act >= 0 && act <= 2, "bias_act: unknown activation id ", act);
    int64_t inner = 1, channels = 1;
    if (b.has_value()) {
        const at::Tensor& bias = b.value();
        SAN_CHECK_SAME_DEVICE(x, bias);
        SAN_CHECK_CONTIGUOUS(bias);
        TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim ", dim, " out of range for a ", x.dim(), "-D tensor");
        TORCH_CHECK(bias.dim() == 1 && bias.numel() == x.size(dim), "bias_act: bias must have x.size(dim) entries");
        TORCH_CHECK(bias.scalar_type() == x.scalar_type(), "bias_act: bias dtype must match x");
        channels = x.size(dim);
        for (int64_t i = dim + 1; i < x.dim(); ++i) inner *= x.size(i);
    }
    const c10::cuda::CUDAGuard guard(x.device());
    at::Tensor y = at::empty_like(x);
    const int64_t n = x.numel();
    if (n == 0) return y;
    const int threads = 256;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_fwd", [&] {
        bias_act_fwd_kernel<scalar_t><<<launch_blocks(n, threads), threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            x.data_ptr<scalar_t>(), b.has_value() ? b.value().data_ptr<scalar_t>() : nullptr, y.data_ptr<scalar_t>(),
            n, inner, channels, static_cast<int>(act), static_cast<float>(alpha), static_cast<float>(gain),
            static_cast<float>(clamp));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return y;
}

at::Tensor bias_act_grad_cuda(const at::Tensor& grad_y, const at::Tensor& y, int64_t act, double alpha, double gain,
                              double clamp) {
    SAN_CHECK_CUDA(grad_y);
    SAN_CHECK_CUDA(y);
    SAN_CHECK_CONTIGUOUS(grad_y);
    SAN_CHECK_CONTIGUOUS(y);
    SAN_CHECK_SAME_DEVICE(grad_y, y);
    TORCH_CHECK(grad_y.sizes() == y.sizes(), "bias_act_grad: grad_y and y must have the same shape");
    TORCH_CHECK(grad_y.scalar_type() == y.scalar_type(), "bias_act_grad: grad_y and y must have the same dtype");
    const c10::cuda::CUDAGuard guard(y.device());
    at::Tensor grad_x = at::empty_like(y);
    const int64_t n = y.numel();
    if (n == 0) return grad_x;
    const int threads = 256;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "bias_act_grad", [&] {
        bias_act_grad_kernel<scalar_t><<<launch_blocks(n, threads), threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            grad_y.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), grad_x.data_ptr<scalar_t>(), n,
            static_cast<int>(act), static_cast<float>(alpha), static_cast<float>(gain), static_cast<float>(clamp));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return grad_x;
}
