"""Names of the ``appmult`` ONNX domain (kept free of heavy imports)."""

DOMAIN = "appmult"
DOMAIN_VERSION = 2  # 2: bits_a / bits_b attributes (version 1 had one "bits")
OP_CONV = "LutConv"
OP_GEMM = "LutGemm"
OP_MATMUL = "LutMatMul"
CUSTOM_OPS = (OP_CONV, OP_GEMM, OP_MATMUL)
