"""Calibration: measure the kernels a DeepSeek-style training step is made of.

The simulator (``simulator/``) never needs a GPU: it reads a *profile*, a JSON
file of measured throughputs (see :mod:`simulator.profile`). This package
produces such profiles. It runs each kernel family (dense and grouped GEMMs in
BF16 and FP8, MLA attention, memory-bound ops, compute under a reduced SM
budget, collectives) over the shapes a scenario uses, checks every kernel
against a float64 reference, times it, and writes the rows through
:func:`simulator.profile.save_profile`.

This ``__init__`` stays import-light on purpose: ``gpuhours predict`` may import
``calibration.runner`` to register the ``calibrate`` subcommand, and that must
not pull in torch or Triton. Heavy imports happen inside the functions that
need them.
"""
