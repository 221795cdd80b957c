"""Numerics: evaluate derived kernels and recursions, integrate flows, check convergence orders."""
