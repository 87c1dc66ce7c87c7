"""Benchmarks, apart from the code they measure: training throughput of every model on every
installed backend (:mod:`~cifarlab.bench.throughput`, `cifarlab bench`), the input path at
each epoch's start (:mod:`~cifarlab.bench.pipeline`) and the notebook kernel's cost
(:mod:`~cifarlab.bench.kernels`). Figures go to BENCHMARKS.md.
"""
