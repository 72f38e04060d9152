"""The kernel seam: attention, norms, SiLU-and-mul and rotary behind one interface.

`TorchKernels` is the reference in plain torch; `TritonKernels`
(node/kernels/triton_kernels.py) is picked on CUDA when triton imports.
"""

from node.kernels.torch_kernels import AttentionMeta, Kernels, TorchKernels

__all__ = ["AttentionMeta", "Kernels", "TorchKernels", "kernels_for"]


def kernels_for(device: str) -> Kernels:
    """Triton on CUDA when it is installed, torch otherwise (and always on CPU)."""
    if str(device).startswith("cuda"):
        try:
            from node.kernels.triton_kernels import TritonKernels
        except ImportError:
            return TorchKernels()
        return TritonKernels()
    return TorchKernels()
