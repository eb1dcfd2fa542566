// normalized_linear: the SAN projection s * <omega / ||omega||, h> (Takida et al., ICLR 2024, Eq. 7) as dispatcher
// ops with their own C++ autograd, so that any caller of torch.ops.san_ext.* (san_ext.layers included, which never
// imports torch_utils) gets the SAN gradient routing no matter who loaded this library. san-ext's own code (MIT).
//
// Ops (namespace san_ext):
//   normalized_linear(h, weight, scale, class_ids=None) -> out                       autograd: h, weight, scale
//   normalized_linear_san(h, weight, scale, class_ids=None) -> (fun, dir)             autograd: SAN routing
//   normalized_linear_forward(...) -> (out, inv_norm)                                 no autograd (kernel)
//   normalized_linear_backward(grad_hs, grad_w, ..., inv_norm, output_mask) -> (grad_h, grad_weight, grad_scale)
// Per output row (class_ids None): h [N, D], weight [O, D], scale [O] -> out [N, O], inv_norm [O].
// Per class row: class_ids [N] int64, weight [C, D], scale [C] or [C, 1] -> out [N], inv_norm [N] (of c_n's row).
// grad_hs is the cotangent that trains h and scale (fun), grad_w the one that trains weight (dir); for the plain op
// both are the single cotangent of out.
//
// The forward/backward ops have a fused CUDA kernel (normalized_linear.cu) and a composite ATen kernel for every
// other device (CPU, Meta): the composite lets the autograd glue be tested without a GPU, and, being differentiable,
// is also what the backward runs when a graph of the backward is wanted (create_graph=True, e.g. an R1 penalty).
#include "common.h"

#include <ATen/OpMathType.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>

#include <array>
#include <optional>
#include <tuple>

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using Mask = std::array<bool, 3>;  // which of (grad_h, grad_weight, grad_scale) to compute
using Grads = std::tuple<Tensor, Tensor, Tensor>;

// Implemented in normalized_linear.cu; inputs arrive checked and contiguous.
std::tuple<Tensor, Tensor> normalized_linear_forward_cuda(const Tensor& h, const Tensor& weight, const Tensor& scale,
                                                          const OptTensor& class_ids);
Grads normalized_linear_backward_cuda(const OptTensor& grad_hs, const OptTensor& grad_w, const Tensor& h,
                                      const Tensor& weight, const Tensor& scale, const OptTensor& class_ids,
                                      const Tensor& inv_norm, Mask mask);

namespace {

constexpr double kEps = 1e-12;  // as F.normalize and san_ext.layers: omega = w / max(||w||, eps)

bool is_class_mode(const OptTensor& class_ids) { return class_ids.has_value() && class_ids->defined(); }

void check_inputs(const Tensor& h, const Tensor& weight, const Tensor& scale, const OptTensor& class_ids) {
    TORCH_CHECK_VALUE(h.dim() == 2, "normalized_linear: h must be [N, D], got shape ", h.sizes());
    TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(1) == h.size(1), "normalized_linear: weight must be [rows, ",
                      h.size(1), "] to match h, got shape ", weight.sizes());
    SAN_CHECK_FLOATING(h);
    TORCH_CHECK_TYPE(weight.scalar_type() == h.scalar_type() && scale.scalar_type() == h.scalar_type(),
                     "normalized_linear: h, weight and scale must share one dtype, got ", h.scalar_type(), ", ",
                     weight.scalar_type(), ", ", scale.scalar_type());
    SAN_CHECK_SAME_DEVICE(h, weight);
    SAN_CHECK_SAME_DEVICE(h, scale);
    const int64_t rows = weight.size(0);
    const bool cls = is_class_mode(class_ids);
    const bool scale_ok = (scale.dim() == 1 && scale.size(0) == rows) ||
                          (cls && scale.dim() == 2 && scale.size(0) == rows && scale.size(1) == 1);
    TORCH_CHECK_VALUE(scale_ok, "normalized_linear: scale must be [", rows, "]", cls ? " or [rows, 1]" : "",
                      ", got shape ", scale.sizes());
    if (cls) {
        TORCH_CHECK_TYPE(class_ids->scalar_type() == at::kLong, "normalized_linear: class_ids must be int64, got ",
                         class_ids->scalar_type());
        TORCH_CHECK_VALUE(class_ids->dim() == 1 && class_ids->size(0) == h.size(0),
                          "normalized_linear: class_ids must be [", h.size(0), "], got shape ", class_ids->sizes());
        SAN_CHECK_SAME_DEVICE(h, (*class_ids));
    }
}

// ---- composite ATen implementation (any device; differentiable) ----

// d/dW of <W / ||W||, G> row by row: (G - w_hat <w_hat, G>) / ||W||.
Tensor project_out(const Tensor& G, const Tensor& w_hat, const Tensor& inv) {
    return (G - w_hat * (w_hat * G).sum(1, true)) * inv.unsqueeze(1);
}

std::tuple<Tensor, Tensor> forward_composite(const Tensor& h, const Tensor& weight, const Tensor& scale,
                                             const OptTensor& class_ids) {
    check_inputs(h, weight, scale, class_ids);
    const auto acc = at::toOpMathType(h.scalar_type());
    const Tensor inv = weight.to(acc).norm(2, {1}).clamp_min(kEps).reciprocal();  // [rows]
    const Tensor s = scale.reshape({-1}).to(acc);
    if (!is_class_mode(class_ids)) {
        const Tensor out = at::mm(h, weight.t()).to(acc) * (s * inv);  // [N, O]
        return {out.to(h.scalar_type()), inv};
    }
    const Tensor& ids = *class_ids;
    const Tensor inv_n = inv.index_select(0, ids);  // [N]
    const Tensor dot = (h.to(acc) * weight.index_select(0, ids).to(acc)).sum(1);
    return {(dot * inv_n * s.index_select(0, ids)).to(h.scalar_type()), inv_n};
}

// The backward in ATen ops. With san, the stop-gradients of SAN.md are kept (fun sees omega^-, dir sees h^- and s^-),
// so that a graph of this backward (double backward) routes like the forward. The norms are recomputed from weight
// so that they, too, are differentiated.
Grads backward_composite(const OptTensor& grad_hs, const OptTensor& grad_w, const Tensor& h, const Tensor& weight,
                         const Tensor& scale, const OptTensor& class_ids, bool san, Mask mask) {
    const auto acc = at::toOpMathType(h.scalar_type());
    const Tensor hf = h.to(acc), s = scale.reshape({-1}).to(acc);
    const Tensor inv = weight.to(acc).norm(2, {1}).clamp_min(kEps).reciprocal();
    const Tensor w_hat = weight.to(acc) * inv.unsqueeze(1);
    const Tensor w_fun = san ? w_hat.detach() : w_hat;
    const Tensor h_dir = san ? hf.detach() : hf, s_dir = san ? s.detach() : s;
    const bool hs = grad_hs.has_value() && grad_hs->defined(), ws = grad_w.has_value() && grad_w->defined();
    Tensor gh, gw, gs;
    if (is_class_mode(class_ids)) {
        const Tensor& ids = *class_ids;
        if (hs && (mask[0] || mask[2])) {
            const Tensor g = grad_hs->to(acc), w_n = w_fun.index_select(0, ids);  // [N], [N, D]
            if (mask[0]) gh = (g * s.index_select(0, ids)).unsqueeze(1) * w_n;
            if (mask[2]) gs = at::zeros_like(s).index_add(0, ids, g * (hf * w_n).sum(1));
        }
        if (ws && mask[1]) {
            const Tensor per_n = (grad_w->to(acc) * s_dir.index_select(0, ids)).unsqueeze(1) * h_dir;  // [N, D]
            gw = project_out(at::zeros_like(w_hat).index_add(0, ids, per_n), w_hat, inv);
        }
    } else {
        if (hs && mask[0]) gh = at::mm(grad_hs->to(acc) * s, w_fun);
        if (hs && mask[2]) gs = (grad_hs->to(acc) * at::mm(hf, w_fun.t())).sum(0);
        if (ws && mask[1]) gw = project_out(at::mm((grad_w->to(acc) * s_dir).t(), h_dir), w_hat, inv);
    }
    return {gh.defined() ? gh.to(h.scalar_type()) : gh, gw.defined() ? gw.to(weight.scalar_type()) : gw,
            gs.defined() ? gs.reshape(scale.sizes()).to(scale.scalar_type()) : gs};
}

Grads backward_composite_kernel(const OptTensor& grad_hs, const OptTensor& grad_w, const Tensor& h,
                                const Tensor& weight, const Tensor& scale, const OptTensor& class_ids,
                                const Tensor& /*inv_norm: recomputed*/, Mask mask) {
    check_inputs(h, weight, scale, class_ids);
    return backward_composite(grad_hs, grad_w, h, weight, scale, class_ids, /*san=*/false, mask);
}

// ---- CUDA kernels: checks and layout here, kernels in the .cu ----

OptTensor contiguous_opt(const OptTensor& t) {
    return t.has_value() && t->defined() ? OptTensor(t->contiguous()) : std::nullopt;
}

std::tuple<Tensor, Tensor> forward_cuda(const Tensor& h, const Tensor& weight, const Tensor& scale,
                                        const OptTensor& class_ids) {
    check_inputs(h, weight, scale, class_ids);
    SAN_CHECK_CUDA(h);
    return normalized_linear_forward_cuda(h.contiguous(), weight.contiguous(), scale.contiguous(),
                                          contiguous_opt(class_ids));
}

void check_cotangent(const OptTensor& g, const Tensor& h, const Tensor& weight, bool cls, const char* name) {
    if (!g.has_value() || !g->defined()) return;
    const bool shape_ok = cls ? (g->dim() == 1 && g->size(0) == h.size(0))
                              : (g->dim() == 2 && g->size(0) == h.size(0) && g->size(1) == weight.size(0));
    TORCH_CHECK_VALUE(shape_ok, "normalized_linear_backward: ", name, " has shape ", g->sizes(),
                      ", which is not the output's shape");
    TORCH_CHECK_TYPE(g->scalar_type() == h.scalar_type(), "normalized_linear_backward: ", name, " must be ",
                     h.scalar_type(), ", got ", g->scalar_type());
}

Grads backward_cuda(const OptTensor& grad_hs, const OptTensor& grad_w, const Tensor& h, const Tensor& weight,
                    const Tensor& scale, const OptTensor& class_ids, const Tensor& inv_norm, Mask mask) {
    check_inputs(h, weight, scale, class_ids);
    SAN_CHECK_CUDA(h);
    const bool cls = is_class_mode(class_ids);
    check_cotangent(grad_hs, h, weight, cls, "grad_hs");
    check_cotangent(grad_w, h, weight, cls, "grad_w");
    TORCH_CHECK_VALUE(inv_norm.dim() == 1 && inv_norm.size(0) == (cls ? h.size(0) : weight.size(0)) &&
                      inv_norm.scalar_type() == at::toOpMathType(h.scalar_type()),
                      "normalized_linear_backward: inv_norm must be the second output of normalized_linear_forward");
    // The cotangents stay strided (the row-mode GEMMs take any layout); the class kernel gets contiguous ones.
    const OptTensor g_hs = cls ? contiguous_opt(grad_hs) : grad_hs, g_w = cls ? contiguous_opt(grad_w) : grad_w;
    return normalized_linear_backward_cuda(g_hs, g_w, h.contiguous(), weight.contiguous(), scale.contiguous(),
                                           contiguous_opt(class_ids), inv_norm.contiguous(), mask);
}

// ---- autograd ----

std::tuple<Tensor, Tensor> call_forward(const Tensor& h, const Tensor& weight, const Tensor& scale,
                                        const OptTensor& class_ids) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("san_ext::normalized_linear_forward", "")
                         .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                           const OptTensor&)>();
    return op.call(h, weight, scale, class_ids);
}

Grads call_backward(const OptTensor& grad_hs, const OptTensor& grad_w, const Tensor& h, const Tensor& weight,
                    const Tensor& scale, const OptTensor& class_ids, const Tensor& inv_norm, Mask mask) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("san_ext::normalized_linear_backward", "")
                         .typed<Grads(const OptTensor&, const OptTensor&, const Tensor&, const Tensor&,
                                      const Tensor&, const OptTensor&, const Tensor&, Mask)>();
    return op.call(grad_hs, grad_w, h, weight, scale, class_ids, inv_norm, mask);
}

OptTensor defined_or_none(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

// One forward kernel; outputs (out) or, with san, (fun, dir) equal in value. The backward takes the h and scale
// gradients from the first cotangent and the weight gradient from the last one (the same one without san).
struct NormalizedLinearFunction : public torch::autograd::Function<NormalizedLinearFunction> {
    static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& h,
                                                  const Tensor& weight, const Tensor& scale,
                                                  const OptTensor& class_ids, bool san) {
        Tensor out, inv_norm;
        {
            at::AutoDispatchBelowADInplaceOrView guard;
            std::tie(out, inv_norm) = call_forward(h, weight, scale, class_ids);
        }
        ctx->save_for_backward({h, weight, scale, class_ids.value_or(Tensor()), inv_norm});
        ctx->saved_data["san"] = san;
        ctx->set_materialize_grads(false);  // an unused fun or dir gives an undefined cotangent: no work for it
        if (san) return {out, out.clone()};  // two distinct outputs: autograd tells their gradients apart
        return {out};
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grads) {
        const auto saved = ctx->get_saved_variables();
        const bool san = ctx->saved_data["san"].toBool();
        const OptTensor grad_hs = defined_or_none(grads[0]), grad_w = defined_or_none(grads[san ? 1 : 0]);
        const OptTensor class_ids = defined_or_none(saved[3]);
        const Mask mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2)};
        Tensor gh, gw, gs;
        if (at::GradMode::is_enabled()) {  // create_graph: differentiable ATen ops with the routing's detaches
            std::tie(gh, gw, gs) = backward_composite(grad_hs, grad_w, saved[0], saved[1], saved[2], class_ids,
                                                      san, mask);
        } else {
            std::tie(gh, gw, gs) = call_backward(grad_hs, grad_w, saved[0], saved[1], saved[2], class_ids,
                                                 saved[4], mask);
        }
        return {gh, gw, gs, Tensor(), Tensor()};
    }
};

Tensor normalized_linear_autograd(const Tensor& h, const Tensor& weight, const Tensor& scale,
                                  const OptTensor& class_ids) {
    return NormalizedLinearFunction::apply(h, weight, scale, class_ids, false)[0];
}

std::tuple<Tensor, Tensor> normalized_linear_san_autograd(const Tensor& h, const Tensor& weight, const Tensor& scale,
                                                          const OptTensor& class_ids) {
    auto out = NormalizedLinearFunction::apply(h, weight, scale, class_ids, true);
    return {out[0], out[1]};
}

// Below autograd (inference mode, or called from another kernel): just the forward.
Tensor normalized_linear_plain(const Tensor& h, const Tensor& weight, const Tensor& scale,
                               const OptTensor& class_ids) {
    return std::get<0>(call_forward(h, weight, scale, class_ids));
}

std::tuple<Tensor, Tensor> normalized_linear_san_plain(const Tensor& h, const Tensor& weight, const Tensor& scale,
                                                       const OptTensor& class_ids) {
    const Tensor out = std::get<0>(call_forward(h, weight, scale, class_ids));
    return {out, out.clone()};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(san_ext, m) {
    m.def("normalized_linear(Tensor h, Tensor weight, Tensor scale, Tensor? class_ids=None) -> Tensor");
    m.def("normalized_linear_san(Tensor h, Tensor weight, Tensor scale, Tensor? class_ids=None) -> (Tensor, Tensor)");
    m.def("normalized_linear_forward(Tensor h, Tensor weight, Tensor scale, Tensor? class_ids=None) -> "
          "(Tensor, Tensor)");
    m.def("normalized_linear_backward(Tensor? grad_hs, Tensor? grad_w, Tensor h, Tensor weight, Tensor scale, "
          "Tensor? class_ids, Tensor inv_norm, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(san_ext, Autograd, m) {
    m.impl("normalized_linear", &normalized_linear_autograd);
    m.impl("normalized_linear_san", &normalized_linear_san_autograd);
}

TORCH_LIBRARY_IMPL(san_ext, CompositeExplicitAutograd, m) {
    m.impl("normalized_linear", &normalized_linear_plain);
    m.impl("normalized_linear_san", &normalized_linear_san_plain);
    m.impl("normalized_linear_forward", &forward_composite);
    m.impl("normalized_linear_backward", &backward_composite_kernel);
}

TORCH_LIBRARY_IMPL(san_ext, CUDA, m) {
    m.impl("normalized_linear_forward", &forward_cuda);
    m.impl("normalized_linear_backward", &backward_cuda);
}
