"""The benchmark suite behind ``nmech bench`` (:mod:`nmech.cli.bench`): every figure a ratio
against a baseline measured in the same run, or a documented fixed budget."""
