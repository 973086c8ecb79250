"""The migration thread: QEMU's pre-copy loop and its parts, for one guest (REF §1.8).

:mod:`sim.endpoints` starts a migration; :mod:`sim.run` assembles the testbed around it. Nothing
in here imports the endpoints, the negotiation or the run assembly.
"""
