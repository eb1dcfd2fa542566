"""Custom ops, each with a pure-PyTorch reference path beside its CUDA kernel."""
