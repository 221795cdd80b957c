"""nmech.validation: train real torch networks and check the derived symmetry dynamics.

Modules, one job each (none is imported here, so ``import nmech.validation`` stays free of torch):

Registries (one vocabulary, read by every other module; :mod:`~nmech.validation.registry`):

* :mod:`~nmech.validation.kinds`        -- symmetry kinds (scale, rescale, translation, ...).
* :mod:`~nmech.validation.signals`      -- what the recorder sums per block and step.
* :mod:`~nmech.validation.optimizers`   -- one adapter per torch.optim class, and the fallback.
* :mod:`~nmech.validation.models`       -- VGG-16 (± BN), ResNet-18, ViT, character-level LM.
* :mod:`~nmech.validation.datasets`     -- synthetic, digits, Tiny ImageNet, Python source.

The run:

* :mod:`~nmech.validation.discovery`    -- symmetry blocks of any ``nn.Module`` (torch.fx).
* :mod:`~nmech.validation.data`         -- image sets and on-device augmented batches.
* :mod:`~nmech.validation.channels`     -- blocks as groups and their per-channel sums.
* :mod:`~nmech.validation.codegen`      -- compiled part sums generated from sympy summands.
* :mod:`~nmech.validation.fused`        -- the recorder's passes (compiled CPU, or torch ops).
* :mod:`~nmech.validation.recorder`     -- hooks that measure Q and its signals in any loop.
* :mod:`~nmech.validation.records`      -- the append-only HDF5 records file (SWMR, checksummed).
* :mod:`~nmech.validation.checkpoint`   -- atomic checkpoints for ``--resume``.
* :mod:`~nmech.validation.stops`        -- divergence and SIGINT/SIGTERM stops.
* :mod:`~nmech.validation.train`        -- the training loop (progress bar, GPU path switches).
* :mod:`~nmech.validation.presets`      -- named run configurations.
* :mod:`~nmech.validation.experiment`   -- the one run set-up, and a preset run end to end.
* :mod:`~nmech.validation.distributed`  -- the same run under torchrun (DistributedDataParallel).
* :mod:`~nmech.validation.device_check` -- the GPU throughput / overhead / error check.
* :mod:`~nmech.validation.cache`        -- where derived files are kept between runs.
* :mod:`~nmech.validation.outputs`      -- output folders: no overwrite, atomic report sets.
* :mod:`~nmech.validation.limits`       -- ranges of numeric settings, one-line refusals.
* :mod:`~nmech.validation.memory`       -- memory a run's settings imply, bounded up front.
* :mod:`~nmech.validation.outputs`      -- output folders checked first; files written as a set.
* :mod:`~nmech.validation.limits`       -- range checks of numeric settings (one line each).
* :mod:`~nmech.validation.memory`       -- memory a run needs, bounded from the device's.

The comparison:

* :mod:`~nmech.validation.compare`      -- predictions of the derived dynamics vs measurement.
* :mod:`~nmech.validation.equilibrium`  -- measured vs predicted rotational equilibrium.
* :mod:`~nmech.validation.report`       -- report.json, report.md, LaTeX tables and equations.
* :mod:`~nmech.validation.figures`      -- the figures (PNG and PDF).
* :mod:`~nmech.validation.figure_files` -- one figure saved as PNG and PDF.

Modified equations on real networks (``nmech flow``) and the paper's figures:

* :mod:`~nmech.validation.flow`         -- data, run (iterates vs order-p flows) and report.
* :mod:`~nmech.validation.small_models` -- smooth MLP and CNNs (± BatchNorm) for the flow check.
* :mod:`~nmech.validation.paper_figures` -- the paper's Figures 2-4 (``nmech figures --paper``).

Command lines: :mod:`nmech.cli.validate`, :mod:`nmech.cli.report`, :mod:`nmech.cli.torchrun`,
:mod:`nmech.cli.device_check`, :mod:`nmech.cli.flow`, :mod:`nmech.cli.figures`.
"""
