// upfirdn2d forward kernel: each thread computes output pixels directly from the input (polyphase), visiting only
// the filter taps that land on real input samples, so zero insertion (up > 1) costs nothing and down > 1 skips the
// outputs it would throw away. Our own code (MIT); no StyleGAN2/3 kernel code. Checks and registration: upfirdn2d.cpp.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>

namespace {

constexpr int kThreads = 256;                 // threads per block
constexpr int64_t kMaxGrid = 65535;           // gridDim.y / gridDim.z limit; larger sizes loop
constexpr size_t kSharedFilterBytes = 48 * 1024;  // default dynamic shared memory limit per block

struct Shape {
    int64_t nc, in_h, in_w, out_h, out_w;  // N*C and the spatial sizes
    int64_t padx0, pady0;
    int fh, fw, upx, upy, downx, downy;
};

// Taps along one axis that hit input samples: input indices n0, n0+1, ... meet filter taps k0, k0+up, ...
struct AxisTaps {
    int64_t n0;
    int k0;
    int count;
};

// For output o, tap k reads upsampled position m = o*down - pad0 + k; it is a real sample when m = n*up, 0 <= n < len.
__device__ __forceinline__ AxisTaps axis_taps(int64_t o, int up, int down, int64_t pad0, int taps, int64_t len) {
    const int64_t base = o * down - pad0;
    const int64_t n0 = (base > 0 ? base + up - 1 : 0) / up;  // first sample at or after base
    const int64_t k0 = n0 * up - base;
    if (k0 >= taps || n0 >= len) {
        return {0, 0, 0};
    }
    const int64_t by_taps = (taps - k0 + up - 1) / up;
    const int64_t count = by_taps < len - n0 ? by_taps : len - n0;
    return {n0, static_cast<int>(k0), static_cast<int>(count)};
}

// Read-only (non-coherent cache) loads; c10's 16-bit types go through their bit patterns.
template <typename T>
__device__ __forceinline__ T load_ro(const T* p) {
    return __ldg(p);
}
template <>
__device__ __forceinline__ c10::Half load_ro(const c10::Half* p) {
    return c10::Half(__ldg(reinterpret_cast<const unsigned short*>(p)), c10::Half::from_bits());
}
template <>
__device__ __forceinline__ c10::BFloat16 load_ro(const c10::BFloat16* p) {
    return c10::BFloat16(__ldg(reinterpret_cast<const unsigned short*>(p)), c10::BFloat16::from_bits());
}

// Block: x over output columns (coalesced stores), y over rows, z over N*C (fills the block for small images).
template <typename scalar_t, typename acc_t, bool kSharedFilter>
__global__ void __launch_bounds__(kThreads)
upfirdn2d_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ g, scalar_t* __restrict__ y,
                 const Shape s) {
    const acc_t* filt = g;
    if constexpr (kSharedFilter) {
        extern __shared__ __align__(16) unsigned char smem[];
        acc_t* shared_filt = reinterpret_cast<acc_t*>(smem);
        const int tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
        for (int i = tid; i < s.fh * s.fw; i += blockDim.x * blockDim.y * blockDim.z) {
            shared_filt[i] = g[i];
        }
        __syncthreads();
        filt = shared_filt;
    }
    const int64_t ox = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (ox >= s.out_w) {
        return;
    }
    const AxisTaps tx = axis_taps(ox, s.upx, s.downx, s.padx0, s.fw, s.in_w);
    const int64_t row_step = static_cast<int64_t>(gridDim.y) * blockDim.y;
    const int64_t nc_step = static_cast<int64_t>(gridDim.z) * blockDim.z;
    for (int64_t oy = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; oy < s.out_h; oy += row_step) {
        const AxisTaps ty = axis_taps(oy, s.upy, s.downy, s.pady0, s.fh, s.in_h);
        const acc_t* f0 = filt + ty.k0 * s.fw + tx.k0;
        for (int64_t nc = static_cast<int64_t>(blockIdx.z) * blockDim.z + threadIdx.z; nc < s.nc; nc += nc_step) {
            const scalar_t* xp = x + (nc * s.in_h + ty.n0) * s.in_w + tx.n0;
            const acc_t* fp = f0;
            acc_t acc = 0;
            for (int iy = 0; iy < ty.count; ++iy) {
#pragma unroll 4
                for (int ix = 0; ix < tx.count; ++ix) {
                    acc += static_cast<acc_t>(load_ro(xp + ix)) * fp[ix * s.upx];
                }
                xp += s.in_w;
                fp += s.upy * s.fw;
            }
            y[(nc * s.out_h + oy) * s.out_w + ox] = static_cast<scalar_t>(acc);
        }
    }
}

// Block shape that keeps all 256 threads busy on small outputs (4x4 images) and warps along rows on large ones.
dim3 block_shape(int64_t out_w, int64_t out_h) {
    int bx = 64;
    while (bx > 4 && bx / 2 >= out_w) {
        bx /= 2;
    }
    int by = kThreads / bx;
    while (by > 1 && by / 2 >= out_h) {
        by /= 2;
    }
    return dim3(bx, by, kThreads / (bx * by));
}

template <typename scalar_t>
void launch_typed(const at::Tensor& x, const at::Tensor& g, at::Tensor& y, const Shape& s) {
    using acc_t = at::opmath_type<scalar_t>;
    TORCH_CHECK(g.scalar_type() == c10::CppTypeToScalarType<acc_t>::value, "upfirdn2d: internal filter dtype ",
                g.scalar_type(), " does not match the accumulator type");
    const dim3 block = block_shape(s.out_w, s.out_h);
    const dim3 grid(static_cast<unsigned>((s.out_w + block.x - 1) / block.x),
                    static_cast<unsigned>(std::min<int64_t>((s.out_h + block.y - 1) / block.y, kMaxGrid)),
                    static_cast<unsigned>(std::min<int64_t>((s.nc + block.z - 1) / block.z, kMaxGrid)));
    const size_t filt_bytes = static_cast<size_t>(s.fh) * s.fw * sizeof(acc_t);
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();  // ATen/cuda/CUDAContext.h needs cuSPARSE headers
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const acc_t* gp = g.const_data_ptr<acc_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    if (filt_bytes <= kSharedFilterBytes) {
        upfirdn2d_kernel<scalar_t, acc_t, true><<<grid, block, filt_bytes, stream>>>(xp, gp, yp, s);
    } else {  // a huge filter stays in global memory (read through the cache)
        upfirdn2d_kernel<scalar_t, acc_t, false><<<grid, block, 0, stream>>>(xp, gp, yp, s);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void upfirdn2d_launch(const at::Tensor& x, const at::Tensor& g, at::Tensor& y, int64_t upx, int64_t upy,
                      int64_t downx, int64_t downy, int64_t padx0, int64_t pady0) {
    TORCH_CHECK(x.is_contiguous() && g.is_contiguous() && y.is_contiguous(),
                "upfirdn2d_launch: x, g and y must be contiguous");
    Shape s;
    s.nc = x.size(0) * x.size(1);
    s.in_h = x.size(2);
    s.in_w = x.size(3);
    s.out_h = y.size(2);
    s.out_w = y.size(3);
    s.padx0 = padx0;
    s.pady0 = pady0;
    s.fh = static_cast<int>(g.size(0));
    s.fw = static_cast<int>(g.size(1));
    s.upx = static_cast<int>(upx);
    s.upy = static_cast<int>(upy);
    s.downx = static_cast<int>(downx);
    s.downy = static_cast<int>(downy);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cuda",
                                    [&] { launch_typed<scalar_t>(x, g, y, s); });
}
