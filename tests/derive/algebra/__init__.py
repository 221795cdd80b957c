"""The dimension-free algebra: trees, their numbers, Lie series."""
