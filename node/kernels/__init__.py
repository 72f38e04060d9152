"""The kernel seam: attention and RMSNorm sit behind one small interface.

The model code calls `Kernels.rms_norm` and `Kernels.attention`; a Triton or
CUDA implementation only has to provide these two methods.
"""

from node.kernels.torch_kernels import AttentionMeta, Kernels, TorchKernels

__all__ = ["AttentionMeta", "Kernels", "TorchKernels"]
