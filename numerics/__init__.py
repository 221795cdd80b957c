"""Numerics: evaluate derived kernels and recursions, integrate flows, check convergence orders."""

from nmech.numerics.predict import predict

__all__ = ["predict"]
