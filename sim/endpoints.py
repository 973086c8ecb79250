"""Source and destination endpoints with QMP-shaped commands, one pair per guest.

An :class:`Endpoint` is one QEMU's migration face: what its version ``supports``, what is
``enabled``, its parameters, and the commands of REF §7.2 as methods (``query_migrate_capabilities``,
``migrate_set_capabilities``, ``query_migrate_parameters``, ``migrate_set_parameters``,
``query_migrate``, ``migrate``, ``migrate_cancel``, ``migrate_incoming``). They take and return
QMP's JSON shapes (hyphenated names, QEMU's units: ms and bytes) and refuse as QEMU does, raising
:class:`sim.errors.QmpError` with QEMU's texts. The negotiation modes (:mod:`sim.negotiation`) and
the QMP server (:mod:`sim.qmp`) both drive migrations through these methods and nothing else.

A :class:`Pair` is one guest's source and destination around its
:class:`sim.engine.migration.Migration`; :class:`sim.run.Testbed` holds the pairs of one
simulation. A migration starts when its source's ``migrate`` is called.

Model notes (departures from QEMU):
* The destination listens from the start, as if run with ``-incoming <uri>``; ``migrate-incoming``
  is accepted once (and then refused as "already started") but is not required before
  ``migrate``. The URI is not used: each source has its one destination.
* ``exit-on-error`` is recorded but the destination process never exits: after a failed load it
  stays, ``status: failed``, so its ``query-migrate`` can be read.
* A new ``migrate`` after a cancelled or failed migration starts another on the same pair (as
  QEMU allows); after a completed one it is refused (the guest lives on the destination).
* Run states (``stop``, ``cont``, ``query-status``): the destination starts paused, as QEMU run
  with ``-S`` (libvirt's way): after the migration completes it is ``paused`` until ``cont``
  (or ``cont`` during ``inmigrate``: autostart), unless :attr:`Endpoint.autostart`. In
  post-copy the destination runs the guest from the switch (libvirt sends ``cont`` then).
  ``cont`` on the source after a completed migration is refused (QEMU would restart it).
  STOP and RESUME events follow the guest of each side (``stop``/``cont``, the switchover, a
  restart after a cancel or a failure, the destination starting), seen at the next command or
  migration event.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any

import numpy as np
import simpy

from . import capabilities, dirtyrate
from . import parameters as qemu_parameters
from .capabilities import InForce
from .engine import precopy
from .engine.migration import Handshake, Migration
from .engine.state import RUNNING, passive
from .errors import QmpError, ScenarioError
from .link import Route
from .qmp import qapi
from .recorder import Recorder
from .spec import EndpointSpec, FaultSpec, MigrationSpec, Scenario

Progress = Callable[[float, float], None]
EventCallback = Callable[[str, dict[str, Any], float], None]




class Endpoint:
    """One side of a migration, commanded as QEMU is over QMP (REF §7.2)."""

    def __init__(self, role: str, spec: EndpointSpec, default_version: str,
                 pair: Pair) -> None:
        self.role = role
        self.pair = pair
        self.version = capabilities.parse_version(spec.version or default_version)
        #: what this endpoint's QEMU knows (and can decode), registry order
        self.supports: tuple[str, ...] = capabilities.supported_by(spec.version, spec.supports)
        missing = [c for c in spec.enabled if c not in self.supports]
        if missing:
            raise ScenarioError(f"{', '.join(missing)}: not supported by this endpoint "
                                f"(supports: {', '.join(self.supports) or 'nothing'})",
                                key=f"endpoints.{role}.enabled")
        self.enabled: set[str] = set(spec.enabled)
        #: the parameters (the single source: query-migrate-parameters renders them), and the
        #: QMP values of those migsim does not model (sim.parameters)
        self.parameters: MigrationSpec = pair.scenario.migration
        self.extras: dict[str, Any] = qemu_parameters.unmodelled()
        self.incoming_started = False
        self.exit_on_error = True
        #: the destination runs the guest once the migration completes (QEMU without ``-S``)
        self.autostart = False
        self.dest_started = False  # ``cont`` after the migration completed (destination)
        self.dirty_rate = dirtyrate.DirtyRateJob()
        self._subscribers: list[EventCallback] = []
        self._was_running = role == "source"  # for STOP / RESUME
        # passive: it keeps its own run state and queues QMP events for clients, who answer
        # later; nothing acts on the simulation at the event's time
        pair.migration.state.subscribers.append(passive(self._on_state_event))

    # --- capabilities --------------------------------------------------------------------------

    def is_enabled(self, name: str) -> bool:
        return name in self.enabled

    def query_migrate_capabilities(self) -> list[dict[str, Any]]:
        """Every capability this version knows, with its state: presence means "supported"."""
        return [{"capability": c, "state": c in self.enabled} for c in self.supports]

    def migrate_set_capabilities(self, capabilities_: Iterable[Mapping[str, Any]]) -> None:
        """All or nothing: the whole new set is validated first (REF §6.1)."""
        if self.status in RUNNING:
            raise QmpError("There's a migration process in progress")
        new = set(self.enabled)
        for item in capabilities_:
            name, state = item["capability"], bool(item["state"])
            if name not in self.supports:
                raise QmpError(f"Parameter 'capability' does not accept value '{name}'")
            (new.add if state else new.discard)(name)
        try:
            capabilities.check_set(new)
        except ValueError as err:
            raise QmpError(str(err)) from None
        self.enabled = new

    def adopt_agreement(self, enabled: Iterable[str], dropped: Iterable[str] = ()) -> None:
        """The in-band handshake's outcome (a migsim extension, :mod:`sim.negotiation`): this
        side runs the migration with ``enabled`` added and ``dropped`` removed. Unlike
        ``migrate-set-capabilities`` this happens during setup, as part of the protocol."""
        self.enabled = (self.enabled - set(dropped)) | set(enabled)

    # --- parameters ----------------------------------------------------------------------------

    def query_migrate_parameters(self) -> dict[str, Any]:
        """QEMU's integers in QEMU's units, rendered from the parameters (REF §6.2)."""
        return qemu_parameters.to_qmp(self.parameters, self.extras)

    def migrate_set_parameters(self, params: Mapping[str, Any]) -> None:
        """All or nothing: the whole request is checked first (QAPI types, then QEMU's ranges,
        with QEMU's texts); then only the parameters given change. A running migration sees the
        change (REF §6.2)."""
        try:
            given = qapi.check(qapi.MIGRATE_SET_PARAMETERS, dict(params))
        except qapi.ArgumentError as err:
            raise QmpError(err.desc) from None
        problem = qemu_parameters.refusal(given, self.parameters,
                                          self.pair.scenario.vm.page_size)
        if problem is not None:
            raise QmpError(problem)
        new = qemu_parameters.apply(self.parameters, given)
        mig = self.pair.migration
        if self.role == "source" and mig.state.running:
            # The running migration takes them first; if it cannot (a cache it cannot
            # allocate), nothing changes, as QEMU's xbzrle_cache_resize keeps the old cache.
            try:
                mig.set_parameters(new)
            except MemoryError:
                raise QmpError("Parameter 'cache size' expects Failed to allocate page cache"
                               ) from None
        self.parameters = new
        self.extras = {**self.extras, **qemu_parameters.unmodelled(given)}

    def migration_spec(self) -> MigrationSpec:
        """The scenario's migration section with what ``migrate-set-parameters`` changed; the
        engine runs with it as it is (nothing goes through QMP's units on the way)."""
        return self.parameters

    # --- migration -----------------------------------------------------------------------------

    @property
    def status(self) -> str:
        state = self.pair.migration.state
        return state.status if self.role == "source" else state.dest_status

    @property
    def running(self) -> bool:
        """Whether this endpoint's guest runs (see :meth:`run_state`)."""
        return self.run_state() == "running"

    def run_state(self) -> str:
        """QEMU's RunState of this side: running, paused, inmigrate, finish-migrate,
        postmigrate."""
        mig = self.pair.migration
        status = self.status
        if self.role == "destination":
            if status.startswith("postcopy"):
                return "running"
            if status == "completed":
                return "running" if self.autostart or self.dest_started else "paused"
            return "inmigrate"
        if status in ("pre-switchover", "device") or status.startswith("postcopy"):
            return "finish-migrate"
        if status == "completed":
            return "postmigrate"
        return "running" if mig.guest.running else "paused"

    def query_status(self) -> dict[str, Any]:
        """QEMU's StatusInfo."""
        state = self.run_state()
        return {"running": state == "running", "status": state}

    def stop(self) -> None:
        """``stop``: the vCPUs of this side stop (a migration in progress goes on, and switches
        over when it can); the destination, before it runs, will wait for ``cont``."""
        if self.role == "source":
            self.pair.migration.pause_guest()
        else:
            self.autostart = self.dest_started = False
        self._run_state_event(self.pair.env.now)

    def cont(self) -> None:
        """``cont``: the vCPUs run again; on a destination still ``inmigrate`` it sets
        autostart (QEMU's qmp_cont)."""
        if self.role == "source":
            if self.status == "completed":
                raise QmpError("migsim: the guest runs on the destination; restarting the "
                               "source after a completed migration is not modelled")
            self.pair.migration.resume_guest()
        elif self.status == "completed":
            self.dest_started = True
        else:
            self.autostart = True
        self._run_state_event(self.pair.env.now)

    def migrate_continue(self, state: str) -> None:
        """``migrate-continue``: a migration paused in ``state`` (``pre-switchover``) goes on."""
        if self.status != state:
            raise QmpError(f"Migration not in expected state: {self.status}")
        self.pair.migration.request_continue()

    def query_name(self) -> dict[str, Any]:
        return {"name": self.pair.name or self.pair.scenario.name}

    def query_migrationthreads(self) -> list[dict[str, Any]]:
        """The migration's threads while one runs on the source (QEMU 9.x names; the thread
        ids are made up, stable per name)."""
        mig = self.pair.migration
        if self.role != "source" or not mig.state.running:
            return []
        names = ["mig/src/main"]
        if "multifd" in mig.caps:
            names += [f"mig/src/send_{i}" for i in range(int(mig.spec.multifd_channels))]
        return [{"name": n, "thread-id": 10000 + i} for i, n in enumerate(names)]

    def calc_dirty_rate(self, calc_time: int, calc_time_unit: str = "second",
                        sample_pages: int | None = None, mode: str = "page-sampling") -> None:
        """``calc-dirty-rate``: start QEMU's page-sampling estimate (:mod:`sim.dirtyrate`)."""
        if self.dirty_rate.status == "measuring":
            raise QmpError("Dirty rate calculation is already in progress")
        seconds = dirtyrate.check(calc_time, calc_time_unit, sample_pages, mode)
        env = self.pair.env
        job = dirtyrate.DirtyRateJob("measuring", env.now, calc_time, calc_time_unit,
                                     sample_pages or dirtyrate.DEFAULT_SAMPLE_PAGES, mode)
        self.dirty_rate = job
        rng = np.random.default_rng([self.pair.scenario.seed, 2, int(env.now * 1e6)])
        env.process(dirtyrate.measure(env, self.pair.migration, job, seconds, rng))

    def query_dirty_rate(self, calc_time_unit: str | None = None) -> dict[str, Any]:
        return self.dirty_rate.info(calc_time_unit)

    def migrate(self, uri: str | None = None, channels: list[Any] | None = None,
                resume: bool = False, *, handshake: Handshake | None = None,
                in_force: InForce | None = None) -> None:
        """Start the migration to this pair's destination; returns at once (REF §7.2).

        ``in_force`` / ``handshake`` come from :mod:`sim.negotiation`; by default what is in
        force is this endpoint's enabled set, checked against the destination as QEMU does.
        """
        if self.role != "source":
            raise QmpError("Guest is waiting for an incoming migration")
        mig = self.pair.migration
        if mig.state.running:
            raise QmpError("There's a migration process in progress")
        if mig.state.status == "completed":
            raise QmpError("migsim: the guest has moved to the destination; start a new "
                           "testbed for another migration")
        if mig.state.status == "failed" and mig.dest_written is not None:
            raise QmpError("migsim: the guest was lost in post-copy; start a new testbed")
        if resume:
            raise QmpError("Cannot resume if there is no paused migration")
        if mig.state.status != "none":  # after a cancel or a failure: a new migration
            mig.renew()
            self.pair.destination.incoming_started = False
        if in_force is None:
            in_force = self.pair.qemu_in_force()
            handshake = handshake or self.pair.setup_checks(in_force)
        env = self.pair.env
        env.process(precopy.migrate(mig, self.migration_spec(), in_force, handshake))

    def migrate_cancel(self) -> None:
        if self.role == "source":
            if self.pair.migration.state.status.startswith("postcopy"):
                raise QmpError("Postcopy migration in progress, cannot cancel.")
            self.pair.migration.request_cancel()

    def migrate_start_postcopy(self) -> None:
        """Ask for the switch to post-copy; it happens at the next iteration (REF §5.1)."""
        mig = self.pair.migration
        if self.role != "source" or "postcopy-ram" not in self.enabled:
            raise QmpError("Enable postcopy with migrate_set_capability before the start of "
                           "migration")
        if mig.state.status not in ("setup", "active"):
            raise QmpError("Postcopy must be started after migration has been started")
        mig.request_postcopy()

    def migrate_incoming(self, uri: str | None = None, channels: list[Any] | None = None,
                         exit_on_error: bool = True) -> None:
        if self.role != "destination":
            raise QmpError("'-incoming' was not specified on the command line")
        if self.incoming_started or self.pair.migration.state.dest_status != "none":
            raise QmpError("The incoming migration has already been started")
        self.incoming_started = True
        self.exit_on_error = exit_on_error

    def query_migrate(self) -> dict[str, Any]:
        """QEMU's MigrationInfo (REF §7.3) from the live simulation."""
        mig = self.pair.migration
        if self.role == "destination":
            state = mig.state
            info: dict[str, Any] = ({} if state.dest_status == "none"
                                    else {"status": state.dest_status})
            if state.dest_status == "failed" and state.failure_reason:
                info["error-desc"] = state.failure_reason
            return info
        return migration_info(mig, self.pair.env.now)

    # --- events --------------------------------------------------------------------------------

    def subscribe(self, callback: EventCallback) -> None:
        """``callback(name, data, t_sim)`` for this side's QMP events, while ``events`` is on."""
        self._subscribers.append(callback)

    def _on_state_event(self, t_s: float, side: str, event: str, data: dict[str, Any]) -> None:
        """A status change or new pass of the migration: STOP / RESUME if the guest of this
        side stopped or started, and this side's QMP event, if wanted."""
        self._run_state_event(t_s)
        if side != self.role or "events" not in self.enabled:
            return
        for callback in list(self._subscribers):
            callback(event, data, t_s)

    def _run_state_event(self, t_s: float) -> None:
        """STOP or RESUME (every client gets them) when this side's guest stopped or started
        since the last look: ``stop``/``cont``, the switchover, a restart after a cancel or a
        failure, the destination starting."""
        running = self.running
        if running == self._was_running:
            return
        self._was_running = running
        for callback in list(self._subscribers):
            callback("RESUME" if running else "STOP", {}, t_s)


def migration_info(mig: Migration, now: float) -> dict[str, Any]:
    """The source's ``query-migrate`` reply (REF §7.3) at sim time ``now``."""
    state = mig.state
    status = state.status
    if status == "none":
        return {}
    info: dict[str, Any] = {"status": status}
    if status == "setup":
        return info
    done = state.ended
    total_time = state.total_time if done else now - state.t_migrate
    c = state.totals()
    page = mig.page_size
    info["total-time"] = int(total_time * 1000)
    info["setup-time"] = int(state.setup_time * 1000)
    if status == "completed" or status.startswith("postcopy"):
        info["downtime"] = int(round(state.downtime * 1000))
    elif not done:
        info["expected-downtime"] = int(round(state.expected_downtime * 1000))
    live = total_time - state.setup_time
    info["ram"] = {
        "transferred": state.transferred,
        "remaining": 0 if done else mig.pending_bytes,
        "total": mig.guest.pages * page,
        "duplicate": c["zero_pages"],
        "normal": c["normal_pages"],
        "normal-bytes": c["normal_pages"] * page,
        "dirty-pages-rate": 0 if done else int(state.dirty_pages_rate),
        "mbps": (state.transferred * 8 / live / 1e6) if done and live > 0
        else state.bandwidth * 8 / 1e6,
        "dirty-sync-count": state.sync_count,
        "postcopy-requests": state.postcopy_faults,
        "page-size": page,
        "multifd-bytes": 0,
        "pages-per-second": int(state.pages_per_second),
        "precopy-bytes": state.precopy_bytes,
        "downtime-bytes": state.downtime_bytes,
        "postcopy-bytes": state.postcopy_bytes,
        "dirty-sync-missed-zero-copy": 0,
    }
    if mig.pipeline.xbzrle_on:
        stats = state.xbzrle_stats(int(mig.spec.xbzrle_cache_size))
        info["xbzrle-cache"] = {k.replace("_", "-"): v for k, v in stats.items()}
    if state.throttle_pct > 0 and mig.in_force.is_enabled("auto-converge"):
        info["cpu-throttle-percentage"] = int(state.throttle_pct)
    if status == "failed" and state.source_error:
        info["error-desc"] = state.source_error
    return info


class Pair:
    """One guest's source and destination endpoints around its Migration."""

    def __init__(self, env: simpy.Environment, link: Route, scenario: Scenario,
                 rng: np.random.Generator, recorder: Recorder, progress: Progress | None,
                 name: str | None = None, faults: Iterable[FaultSpec] = ()) -> None:
        self.env = env
        self.scenario = scenario
        self.name = name
        self.recorder = recorder
        self.migration = Migration(env, scenario, recorder, rng, link, progress, faults)
        version = scenario.migration.qemu_version
        ends = scenario.endpoints
        self.source = Endpoint("source", ends.source, version, self)
        self.destination = Endpoint("destination", ends.destination, version, self)

    def qemu_in_force(self) -> InForce:
        """What QEMU itself puts in force from the two sides' settings (REF §6.1, §8.2).

        The source runs with its own set. The destination parses every record its version
        knows, whatever its flags. A ``needs_both_sides`` mismatch shows as REF §6.1 says; see
        :func:`sim.negotiation.mismatch`.
        """
        dst = self.destination
        return capabilities.qemu_in_force(self.source.enabled, dst.supports, dst.enabled)

    def setup_checks(self, in_force: InForce) -> Handshake:
        """QEMU's own in-band checks at setup (REF §8.3): a ``needs_both_sides`` mismatch that
        QEMU detects then fails the migration in setup with the destination's words."""
        error = capabilities.mismatch(self.source.enabled, self.destination.enabled)

        def check(mig: Migration) -> Generator[simpy.Event, None, InForce | str]:
            yield mig.env.timeout(0)
            if error is not None:
                mig.rec.event(mig.env.now, "destination", "error", error)
                return error
            return in_force

        return check
