"""Benchmarks of edge-facedet: `python -m benchmarks.run` (or `edge-facedet bench`) runs them.

A package so the entry point and its helpers import each other by name; none of it is part of
the installed `edge_facedet` package.
"""
