"""Mini-batch SGD: the mean-epoch modified flow under random reshuffling or sampling with
replacement (:mod:`~nmech.derive.stochastic.minibatch`), sums over batches written with Σ_k
(:mod:`~nmech.derive.stochastic.batch_sums`) and the stochastic modified equation
(:mod:`~nmech.derive.stochastic.sde`)."""
