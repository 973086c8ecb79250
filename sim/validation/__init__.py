"""Validation: the model against closed forms, published results and a real QEMU (``migsim validate``).

* :mod:`.cases` — cases as data (``cases/*.yaml``: model cases; ``real/*.yaml``: real-QEMU cases),
  each with its source and tolerance.
* :mod:`.formulas` — the closed forms the case data is checked against.
* :mod:`.quantities` — the quantities a case may name (``runs`` columns, pass structure, ratios).
* :mod:`.suite` — runs model cases, judges each quantity (:class:`~.suite.Row`).
* :mod:`.guest`, :mod:`.qemu`, :mod:`.qemu_tables`, :mod:`.real` — the real-QEMU harness: a
  512-byte boot-sector guest, two QEMUs over QMP on loopback, their observations as migsim's four
  tables, and the same scenario simulated for comparison.
* :mod:`.report`, :mod:`.command` — the table, ``validation.csv``, the figure, the exit status.

Findings are in ``sim/validation/README.md``.
"""
