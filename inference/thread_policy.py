"""Which thread pool a graph's work runs on, so that at n threads only one pool is busy.

Why: numpy's GEMMs run on OpenBLAS's pthread pool and our kernels' ``prange`` on numba's OpenMP
pool; both spin after their work, so a run alternating between them makes each pool's workers
fight the other's for the cores (``inference.kernels._jit``). Since float convolutions run on our
own tile, a CNN's work is nearly all numba: ResNet-18 at batch 1 on 2 threads took 86 ms with BLAS
threaded (its one Gemm kept OpenBLAS spinning) against 22 ms with BLAS capped at 1 and every numba
kernel on its parallel twin. Fused products with a constant weight run on our tile too
(``inference.kernels.rows_gemm``), so a transformer is numba work but for its attention's products
of two activations; a graph of products of fed matrices is BLAS work and keeps the old split.
"""
from __future__ import annotations

from inference.flops import node_flops, row_flops
from inference.ir import Graph, Node
from inference.kernels.fused import matmul_weight_constant

BLAS_OPS = frozenset({"MatMul", "Gemm", "FusedMatMul"})
#: FLOPs of a whole run below which its numba kernels run serial however many threads there are.
#: Why: each threaded kernel call pays a fork and join (~2-5 us here), about what the second core
#: saves on a layer of ~1M multiply-adds or less, and a small model is all such layers. Measured at
#: 2 threads (one process, alternating): the MNIST CNN (2.1 MFLOP) 50.5 us threaded against 42-44
#: serial; MLPerf Tiny's ResNet-8 (25 MFLOP) 202-305 threaded against 240-327 serial (one noisy A/B). A
#: per-layer rule instead (serial below 1M multiply-adds) made shufflenet 1.43x slower: its small
#: layers went serial between threaded ones, which then ran slower still.
MIN_THREADED_FLOPS = 8_000_000


def runs_on_blas(graph: Graph, node: Node) -> bool:
    """Whether ``node``'s arithmetic is a numpy/BLAS GEMM (the rest is numba or cheap numpy)."""
    if node.op_type == "FusedMatMul" and matmul_weight_constant(node, graph):  # on our tile
        return False
    if node.op_type in BLAS_OPS:
        return True
    if node.op_type in ("Conv", "FusedConv"):  # the tile runs all but dilated strided ones
        strided = any(s > 1 for s in node.attrs.get("strides", ()) or ())
        dilated = any(d > 1 for d in node.attrs.get("dilations", ()) or ())
        return strided and dilated
    return False


def numba_share(graph: Graph) -> float:
    """The fraction of the graph's FLOPs (batch 1, known shapes) that numba kernels compute."""
    total = blas = 0
    for node in graph.nodes:
        f = node_flops(graph, node) or 0
        total += f
        blas += f if runs_on_blas(graph, node) else 0
    return 1.0 - blas / total if total else 0.0


def prefers_numba_pool(graph: Graph) -> bool:
    """Run numba's pool threaded and BLAS serial when numba computes most of the FLOPs."""
    return numba_share(graph) >= 0.5


def serial_rows(graph: Graph) -> int:
    """The batch sizes up to which a run of ``graph`` stays below :data:`MIN_THREADED_FLOPS` (its
    kernels then run serial); 0 when no batch does, or its FLOPs per row are not known (shapes not
    all inferred, or a symbolic sequence length: a BERT export with dynamic axes ran its batch 1 of
    128 tokens serial, its count taken at one token)."""
    total = row_flops(graph)
    return MIN_THREADED_FLOPS // total if total else 0
