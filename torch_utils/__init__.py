"""Low-level PyTorch utilities and custom ops of san-ext (upfirdn2d, bias_act, filtered_lrelu, normalized_linear)."""
