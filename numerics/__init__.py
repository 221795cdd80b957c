"""Numerics: evaluate derived kernels and recursions, integrate flows, check convergence orders."""

from .predict import predict

__all__ = ["predict"]
