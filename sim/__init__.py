"""migsim: a discrete-event testbed for QEMU-style pre-copy live migration.

    import sim
    scenario = sim.load_scenario("scenarios/quickstart.yaml")
    result = sim.run(scenario)
"""

from __future__ import annotations

from .controllers import Controller, register_controller
from .encoders import Encoder, register_encoder
from .errors import MigrationError, QmpError, ScenarioError, XbzrleDecodeError
from .result import Result
from .run import run
from .scenario import load_scenario
from .version import version

__version__ = version()

__all__ = [
    "Controller",
    "Encoder",
    "__version__",
    "MigrationError",
    "QmpError",
    "Result",
    "ScenarioError",
    "XbzrleDecodeError",
    "load_scenario",
    "register_controller",
    "register_encoder",
    "run",
]
