"""The steps of ``benchmarks/gpu_check.py``, one module each, and what they share.

``context``: paths, the data spec and the per-step ``Context``; ``runner``: each step in its own
process with its own time limit; ``pytest_cuda``, ``syncs``, ``throughput``, ``faiss_knn``,
``two_epochs``: the steps; ``dry_run``: their CPU part, built without CUDA. Imported as
``benchmarks.gpu`` with the repository root on ``sys.path`` (gpu_check.py puts it there).
"""
