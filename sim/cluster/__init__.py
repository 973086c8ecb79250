"""Clusters: hosts in racks, a network, guests placed on hosts, and a scheduler that runs a plan
of page-level migrations (evacuate, moves, rolling upgrade) in one simulation.

Modules: :mod:`.spec` (the ``cluster:`` section), :mod:`.inventory` (hosts and guests expanded),
:mod:`.plans` (what to migrate), :mod:`.scheduler` (when), :mod:`.runner` (one run),
:mod:`.tables` (the cluster's tables). This package's ``__init__`` imports nothing, so
:mod:`sim.spec` can import :mod:`.spec` without a cycle.
"""
