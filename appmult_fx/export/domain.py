"""Names of the ``appmult`` ONNX domain (kept free of heavy imports)."""

DOMAIN = "appmult"
DOMAIN_VERSION = 1
OP_CONV = "LutConv"
OP_GEMM = "LutGemm"
OP_MATMUL = "LutMatMul"
CUSTOM_OPS = (OP_CONV, OP_GEMM, OP_MATMUL)
