"""The controller interface: :class:`Controller`, its registry, and the :class:`Client` through
which it acts (see :mod:`sim.controllers`)."""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import PluginError, QmpError
from ..plugins import import_plugin
from ..spec import ControllerSpec, Scenario
from ..units import GiB

if TYPE_CHECKING:
    from ..endpoints import Pair

#: the ControllerSpec keys a controller may read (besides ``kind`` and ``poll_interval``)
OPTION_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ControllerSpec)
                                     if f.name not in ("kind", "poll_interval"))


class Controller:
    """Base class: a management policy. Subclass it, set ``name`` (and ``keys``, the
    ``controller:`` keys it reads, and ``poll_interval``), override what it reacts to, and
    decorate the class with :func:`register_controller` (or name it as ``module:Class``).

    ``self.spec`` is the scenario's :class:`~sim.spec.ControllerSpec`; :meth:`option` reads a key
    with the controller's default.
    """

    name: ClassVar[str]
    #: the ``controller:`` keys this controller reads; any other key is refused on loading
    keys: ClassVar[tuple[str, ...]] = ()
    #: seconds between two ``query-migrate`` polls (``controller.poll_interval`` overrides it)
    poll_interval: ClassVar[float] = 0.5

    def __init__(self, spec: ControllerSpec) -> None:
        self.spec = spec

    def option(self, key: str, default: Any) -> Any:
        """``controller.<key>``, or ``default`` when the scenario leaves it out."""
        value = getattr(self.spec, key)
        return default if value is None else value

    def start(self, client: Client) -> None:
        """The migration has started (``query-migrate`` shows ``setup``)."""

    def poll(self, client: Client, info: dict[str, Any]) -> None:
        """One ``query-migrate`` reply (QEMU's MigrationInfo), every ``poll_interval``."""

    def event(self, client: Client, name: str, data: dict[str, Any]) -> None:
        """A source event: ``MIGRATION`` (``data["status"]``) or ``MIGRATION_PASS``."""

    @classmethod
    def refusal(cls, spec: ControllerSpec, scenario: Scenario) -> tuple[str, str] | None:
        """A problem with this controller's keys in ``scenario``: ``(key, problem)`` or None."""
        return None

    @classmethod
    def outbound_limit(cls, spec: ControllerSpec) -> int | None:
        """How many of a fleet's migrations may run at once (one source host), or None."""
        return None


CONTROLLERS: dict[str, type[Controller]] = {}


def register_controller(cls: type[Controller]) -> type[Controller]:
    """Add a controller (a class decorator).

    Raises:
        ValueError: no name, a name another class has, or keys ``controller:`` does not have.
    """
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"{cls.__qualname__}: a controller needs a 'name' (without ':')")
    if not (isinstance(cls, type) and issubclass(cls, Controller)):
        raise ValueError(f"{cls!r} is not a sim.Controller subclass")
    unknown = [k for k in cls.keys if k not in OPTION_KEYS]
    if unknown:
        raise ValueError(f"controller '{name}': keys {', '.join(unknown)} are not "
                         f"controller: keys ({', '.join(OPTION_KEYS)})")
    existing = CONTROLLERS.get(name)
    if existing is not None and existing is not cls and not (
            existing.__module__ == cls.__module__ and existing.__qualname__ == cls.__qualname__):
        raise ValueError(f"controller '{name}' is already registered by "
                         f"{existing.__module__}.{existing.__qualname__}")
    CONTROLLERS[name] = cls
    return cls


def resolve(kind: str, file: str | None = None) -> type[Controller]:
    """The controller class of ``kind``: a registered name, or ``module:Class`` (imported from
    the scenario's folder or the working folder, registered under its ``name``).

    Raises:
        LookupError: an unknown name, a module without that class, or not a Controller.
        ImportError (or what the module raises): the module cannot be imported.
    """
    if ":" not in kind:
        if kind not in CONTROLLERS:
            close = difflib.get_close_matches(kind, CONTROLLERS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise LookupError(f"{kind!r} is not a known controller (known: "
                              f"{', '.join(CONTROLLERS)}, or module:Class){hint}")
        return CONTROLLERS[kind]
    module, _, attr = kind.partition(":")
    import_plugin(module, file or "<scenario>")
    cls = getattr(sys.modules[module], attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Controller)):
        raise LookupError(f"{kind!r}: {module} has no sim.Controller subclass {attr!r}")
    if CONTROLLERS.get(getattr(cls, "name", "")) is not cls:
        register_controller(cls)
    return cls


def refusal(spec: ControllerSpec, scenario: Scenario) -> tuple[str, str] | None:
    """What is wrong with a scenario's ``controller:`` section: ``(key, problem)`` or None."""
    try:
        cls = resolve(spec.kind, scenario.source_file)
    except LookupError as err:
        return "kind", str(err)
    except (Exception, SystemExit) as err:  # noqa: BLE001 - a plug-in's import is the scenario's
        return "kind", f"cannot import controller {spec.kind!r}: {type(err).__name__}: {err}"
    for key in OPTION_KEYS:
        if getattr(spec, key) is not None and key not in cls.keys:
            reads = ", ".join(cls.keys) or "none"
            return key, f"the {cls.name} controller does not read this key (it reads: {reads})"
    return cls.refusal(spec, scenario)


def postcopy_asked(scenario: Scenario) -> bool:
    """Whether the operator enables ``postcopy-ram`` on the source (nova and KubeVirt ask
    libvirt for post-copy with the migration: here, ``migration.capabilities``)."""
    return "postcopy-ram" in (set(scenario.migration.capabilities)
                              | set(scenario.endpoints.source.enabled))


class Client:
    """A management client of one pair's source: the commands a controller may send."""

    def __init__(self, pair: Pair, name: str) -> None:
        self.pair = pair
        self.name = name
        self.t_start = pair.env.now  # when the migration started
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = 0

    # --- what management knows -----------------------------------------------------------
    @property
    def now(self) -> float:
        return float(self.pair.env.now)

    @property
    def elapsed(self) -> float:
        """Seconds since the migration started (``migrate`` was issued)."""
        return self.now - self.t_start

    @property
    def ram_bytes(self) -> int:
        """The guest's RAM, as management configured it."""
        return int(self.pair.scenario.vm.memory)

    @property
    def ram_gib(self) -> float:
        return self.ram_bytes / GiB

    def enabled(self) -> set[str]:
        """The source's enabled capabilities (query-migrate-capabilities)."""
        return {c["capability"] for c in self.pair.source.query_migrate_capabilities()
                if c["state"]}

    def query_migrate(self) -> dict[str, Any]:
        return self.pair.source.query_migrate()

    def query_migrate_parameters(self) -> dict[str, Any]:
        return self.pair.source.query_migrate_parameters()

    # --- commands (each one an events row) --------------------------------------------------
    def note(self, action: str, **values: Any) -> None:
        """An events row of this controller's own (a decision, not a command)."""
        detail = {"controller": self.name, "action": action, **values}
        self.pair.recorder.event(self.now, "management", "controller",
                                 json.dumps(detail, separators=(",", ":"), sort_keys=False))

    def _command(self, action: str, run: Callable[[], None], **args: Any) -> None:
        try:
            run()
        except QmpError as err:
            self.note(action, **args, error=err.desc)
            raise
        self.note(action, **args)

    def migrate_set_parameters(self, **params: Any) -> None:
        """QMP migrate-set-parameters with QMP's names (``downtime-limit`` in ms, ...)."""
        self._command("migrate-set-parameters",
                      lambda: self.pair.source.migrate_set_parameters(params), **params)

    def migrate_start_postcopy(self) -> None:
        self._command("migrate-start-postcopy", self.pair.source.migrate_start_postcopy)

    def migrate_cancel(self) -> None:
        self._command("migrate_cancel", self.pair.source.migrate_cancel)

    def stop(self) -> None:
        """QMP ``stop``: the source's vCPUs pause."""
        self._command("stop", self.pair.source.stop)

    def cont(self) -> None:
        """QMP ``cont``: the source's guest runs again."""
        self._command("cont", self.pair.source.cont)

    def call_at(self, t: float, callback: Callable[[], None]) -> None:
        """Call ``callback()`` at sim time ``t`` (a timer, as virsh's ``--timeout``); timers
        still pending when the migration ends are dropped."""
        self._timer_seq += 1
        self.timers.append((t, self._timer_seq, callback))
        self.timers.sort(key=lambda x: (x[0], x[1]))


def call(name: str, method: str, fn: Callable[..., Any], *args: Any) -> Any:
    """A controller's code, with whatever it does wrong turned into one PluginError line."""
    try:
        return fn(*args)
    except (Exception, SystemExit) as err:  # noqa: BLE001 - any failure of a controller
        what = (f"called sys.exit({err.code!r})" if isinstance(err, SystemExit)
                else f"raised {type(err).__name__}: {' '.join(str(err).split())[:200]}")
        raise PluginError(f"controller {name!r}: {method}() {what}") from None



@register_controller
class NoController(Controller):
    """No controller: the operator's migrate and QEMU's own parameters alone."""

    name = "none"
