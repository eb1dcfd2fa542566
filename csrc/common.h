// Shared checks for the san-ext CUDA ops. Our own code (MIT); no StyleGAN3 kernel code.
#pragma once
#include <torch/library.h>
#include <ATen/ATen.h>

#define SAN_CHECK_CUDA(x) TORCH_CHECK((x).is_cuda(), #x " must be a CUDA tensor")
#define SAN_CHECK_CONTIGUOUS(x) TORCH_CHECK((x).is_contiguous(), #x " must be contiguous")
#define SAN_CHECK_FLOATING(x) \
    TORCH_CHECK((x).scalar_type() == at::kFloat || (x).scalar_type() == at::kHalf || \
                (x).scalar_type() == at::kBFloat16 || (x).scalar_type() == at::kDouble, \
                #x " must be float16, bfloat16, float32 or float64, got ", (x).scalar_type())
#define SAN_CHECK_SAME_DEVICE(x, y) TORCH_CHECK((x).device() == (y).device(), #x " and " #y " must be on the same device")
