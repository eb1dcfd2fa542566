// bias_act: registration of the fused bias + activation + gain + clamp kernels (san-ext's own code, MIT).
#include "common.h"

at::Tensor bias_act_fwd_cuda(const at::Tensor& x, const c10::optional<at::Tensor>& b, int64_t dim, int64_t act,
                             double alpha, double gain, double clamp);
at::Tensor bias_act_grad_cuda(const at::Tensor& grad_y, const at::Tensor& y, int64_t act, double alpha, double gain,
                              double clamp);

TORCH_LIBRARY_FRAGMENT(san_ext, m) {
    m.def("bias_act_fwd(Tensor x, Tensor? b, int dim, int act, float alpha, float gain, float clamp) -> Tensor");
    m.def("bias_act_grad(Tensor grad_y, Tensor y, int act, float alpha, float gain, float clamp) -> Tensor");
}

TORCH_LIBRARY_IMPL(san_ext, CUDA, m) {
    m.impl("bias_act_fwd", &bias_act_fwd_cuda);
    m.impl("bias_act_grad", &bias_act_grad_cuda);
}
