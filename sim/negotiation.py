"""The four ways a migration's capabilities get decided (DESIGN §3, REF §8), as operators.

Each mode is a SimPy process that waits for ``migration.start`` and then talks to the two
:class:`~sim.endpoints.Endpoint` objects only through their QMP-shaped commands, recording every
command and reply as an event (endpoint = who received it), before it calls ``migrate``. The
in-band handshake is the one exception: it runs inside the migration's setup, and both sides
take its outcome through :meth:`~sim.endpoints.Endpoint.adopt_agreement`.

The operator's wish list ``W`` is ``migration.capabilities`` plus ``endpoints.source.enabled``.

* ``none``: no negotiation. ``W`` is set on the source as given; the destination keeps what it
  was started with. A record the destination cannot parse fails the migration when it arrives
  (REF §8.2), a both-sides mismatch fails as QEMU reports it.
* ``qemu``: today's QEMU with an operator who follows QEMU's docs: ``W`` on the source, and the
  capabilities of ``W`` that QEMU needs on both sides (``needs_both_sides``, with what they
  require) on the destination too, where it knows them. XBZRLE is not needed there (the destination decodes it whatever its
  flag), so an old destination still fails at the first XBZRLE record.
* ``management``: the 2011 proposal as libvirt does it: query both sides, set on the
  destination what it supports of ``W``, read back its current set, and set on the source that
  set plus ``W``'s source-only capabilities. Capabilities that change the wire or need both
  sides are thus used only when both support them; a side-effect capability (auto-converge, ...)
  is copied from the destination only if the operator asked for it.
* ``inband`` (a migsim extension; QEMU has no such thing for encoders, REF §8.3): after the
  connection is up, the source offers ``W``'s wire and both-sides capabilities over the return
  path and the destination answers with those it supports: one more round trip in setup. The
  return path is used whenever both sides support ``return-path`` (it has no side effect);
  without it the two fall back to the legacy protocol, with no wire or both-sides capability.

``MODES`` is the registry: each name (with its one-line doc, :data:`sim.choices.NEGOTIATION_MODES`)
and its operator, which issues the mode's commands and says how the source starts.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import simpy

from .capabilities import CAPABILITIES, InForce
from .choices import NEGOTIATION_MODES
from .engine.migration import Handshake, Migration
from .engine.state import passive
from .errors import QmpError

if TYPE_CHECKING:
    from .endpoints import Endpoint, Pair


@dataclass(frozen=True, slots=True)
class Start:
    """How an operator has the source start its migration (``Endpoint.migrate``'s arguments):
    both None is QEMU's own way, its enabled set checked against the destination at setup."""

    handshake: Handshake | None = None
    in_force: InForce | None = None


#: an operator: the QMP commands of one mode, given the wish list; a refused command raises
Operator = Callable[["Pair", list[str]], Start]


def wish_list(pair: Pair) -> list[str]:
    """What the operator asked for on the source, in registry order."""
    asked = set(pair.scenario.migration.capabilities) | set(pair.scenario.endpoints.source.enabled)
    return [c for c in CAPABILITIES if c in asked]


def needs_destination(name: str) -> bool:
    """A capability the destination must support for the stream to load (REF §6.1, §8.2)."""
    cap = CAPABILITIES[name]
    return cap.on_wire or cap.needs_both_sides


def operate(pair: Pair, mode: str) -> Generator[simpy.Event, None, None]:
    """The operator of one pair: at ``migration.start``, decide capabilities by ``mode`` and
    start the migration. A refused command fails the migration in setup with QEMU's text."""
    operator, _ = MODES[mode]
    env = pair.env
    # (from now: a controller may hold an operator back, sim.controllers.OutboundSlots)
    yield env.timeout(max(0.0, pair.scenario.migration.start - env.now))
    wishes = wish_list(pair)
    try:
        start = operator(pair, wishes)
    except QmpError as err:
        pair.migration.refuse(err.desc)
        return
    pair.source.migrate(handshake=start.handshake, in_force=start.in_force)
    # With pause-before-switchover the operator has nothing to do at the switchover (as
    # libvirt without block jobs): it sends migrate-continue as soon as pre-switchover shows.
    # (passive: it acts on this migration's own switchover only)
    pair.migration.state.subscribers.append(passive(
        lambda t, side, event, data: pair.source.migrate_continue("pre-switchover")
        if side == "source" and data.get("status") == "pre-switchover" else None))


def _none(pair: Pair, wishes: list[str]) -> Start:
    if wishes:
        _set(pair, pair.source, wishes, "operator")
    return Start()


def _qemu(pair: Pair, wishes: list[str]) -> Start:
    _none(pair, wishes)
    both = {c for c in wishes if CAPABILITIES[c].needs_both_sides
            and c in pair.destination.supports}
    both |= {r for c in both for r in CAPABILITIES[c].requires}
    if both:
        _set(pair, pair.destination, [c for c in CAPABILITIES if c in both], "operator")
    return Start()


def _inband_mode(pair: Pair, wishes: list[str]) -> Start:
    _none(pair, wishes)
    return Start(handshake=_inband(pair, wishes), in_force=pair.qemu_in_force())


def _event(pair: Pair, endpoint: str, command: str, detail: Any) -> None:
    pair.recorder.event(pair.env.now, endpoint, command, detail)


def _set(pair: Pair, ep: Endpoint, names: Iterable[str], who: str,
         off: Iterable[str] = ()) -> None:
    items = ([{"capability": c, "state": True} for c in names]
             + [{"capability": c, "state": False} for c in off])
    _event(pair, ep.role, "migrate-set-capabilities", {"by": who, "capabilities": items})
    ep.migrate_set_capabilities(items)


def _query(pair: Pair, ep: Endpoint) -> set[str]:
    """query-migrate-capabilities; returns the enabled names (presence = supported)."""
    reply = ep.query_migrate_capabilities()
    _event(pair, ep.role, "query-migrate-capabilities",
           {"supported": [r["capability"] for r in reply],
            "enabled": [r["capability"] for r in reply if r["state"]]})
    return {r["capability"] for r in reply if r["state"]}


def _management(pair: Pair, wishes: list[str]) -> Start:
    src, dst = pair.source, pair.destination
    _query(pair, src)
    _query(pair, dst)
    _set(pair, dst, [c for c in wishes if c in dst.supports], "management")
    current = _query(pair, dst)
    asked = set(wishes)
    chosen = {c for c in current
              if c in src.supports and (not CAPABILITIES[c].side_effect or c in asked)}
    chosen |= {c for c in wishes if c in src.supports and not needs_destination(c)}
    for c in wishes:
        if c not in chosen:
            where = "source" if c not in src.supports else "destination"
            _event(pair, "management", "dropped", f"{c}: not supported by the {where}")
    ordered = [c for c in CAPABILITIES if c in chosen]
    _set(pair, src, ordered, "management", off=sorted(src.enabled - chosen))
    return Start()


def _inband(pair: Pair, wishes: list[str]):
    """The in-band handshake, run by the migration after the connection is up."""
    src, dst = pair.source, pair.destination

    def handshake(mig: Migration) -> Generator[simpy.Event, None, InForce | str]:
        latency = mig.link.latency_s
        offer = [c for c in wishes if needs_destination(c)]
        if "return-path" not in src.supports or "return-path" not in dst.supports:
            dropped = set(offer)
            mig.rec.event(mig.env.now, "source", "inband-fallback",
                          "no return path: legacy protocol"
                          + (f", dropping {','.join(offer)}" if offer else ""))
            yield mig.env.timeout(0)
            agreed_both: list[str] = []
        else:
            mig.rec.event(mig.env.now, "source", "inband-offer", {"capabilities": offer})
            accepted = [c for c in offer if c in dst.supports]
            mig.rec.event(mig.env.now + latency, "destination", "inband-accept",
                          {"capabilities": accepted})
            yield mig.env.timeout(2 * latency)
            dropped = set(offer) - set(accepted)
            agreed_both = [*accepted, "return-path"]
        for c in sorted(dropped):
            mig.rec.event(mig.env.now, "source", "dropped", f"{c}: not agreed in-band")
        # Both endpoints now run with the agreement: their flags show it.
        src.adopt_agreement(agreed_both, dropped)
        dst.adopt_agreement(c for c in agreed_both if CAPABILITIES[c].needs_both_sides
                            or c == "return-path")
        in_force = pair.qemu_in_force()
        return InForce(frozenset(src.enabled), in_force.dest_decodes,
                       in_force.switchover_blocked)

    return handshake


#: the negotiation modes: name -> (operator, one-line doc); names and docs are sim.choices'
MODES: dict[str, tuple[Operator, str]] = {
    name: (operator, NEGOTIATION_MODES[name]) for name, operator in (
        ("none", _none), ("qemu", _qemu), ("management", _management), ("inband", _inband_mode))
}
assert tuple(MODES) == tuple(NEGOTIATION_MODES), "every negotiation mode needs its operator"
