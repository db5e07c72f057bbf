"""C++/CUDA sources of the LUT-GEMM kernels (shipped as package data, compiled on first use)."""
