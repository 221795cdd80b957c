"""nmech.validation: train real torch networks and check the derived symmetry dynamics.

Modules, one job each (none is imported here, so ``import nmech.validation`` stays free of torch):

* :mod:`~nmech.validation.models`       -- the paper's VGG-16 (with and without BatchNorm).
* :mod:`~nmech.validation.discovery`    -- symmetry blocks found in any ``nn.Module`` by torch.fx.
* :mod:`~nmech.validation.channels`     -- per-channel fused float64 reductions over blocks.
* :mod:`~nmech.validation.data`         -- synthetic data and on-device augmented batches.
* :mod:`~nmech.validation.tiny_imagenet` -- the Tiny ImageNet folder loader with a uint8 cache.
* :mod:`~nmech.validation.optim`        -- the derivation rule read from torch's SGD or AdamW.
* :mod:`~nmech.validation.recorder`     -- hooks that measure Q and its signals in any loop.
* :mod:`~nmech.validation.records`      -- the append-only HDF5 records file (SWMR, checksummed).
* :mod:`~nmech.validation.checkpoint`   -- atomic checkpoints for ``--resume``.
* :mod:`~nmech.validation.stops`        -- divergence and SIGINT/SIGTERM stops.
* :mod:`~nmech.validation.train`        -- the training loop (SGD, progress bar).
* :mod:`~nmech.validation.compare`      -- predictions of the derived dynamics vs measurement.
* :mod:`~nmech.validation.report`       -- report.json, report.md, LaTeX tables and equations.
* :mod:`~nmech.validation.equilibrium`  -- measured vs predicted rotational equilibrium.
* :mod:`~nmech.validation.figures`      -- the paper-style figures (PNG).
* :mod:`~nmech.validation.presets`      -- named run configurations.
* :mod:`~nmech.validation.experiment`   -- one preset run end to end.
* :mod:`~nmech.cli.validate`, :mod:`~nmech.cli.report` -- ``nmech validate|report``.
* :mod:`~nmech.validation.distributed`  -- the same run under torchrun (DistributedDataParallel).
* :mod:`~nmech.validation.device_check` -- the GPU throughput / overhead / error check.
"""
