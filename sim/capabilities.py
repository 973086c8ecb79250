"""The migration capabilities a QEMU endpoint can switch on, and the rules for combining them.

``CAPABILITIES`` lists QEMU's 21 capabilities in QAPI enum order, the order in which
``query-migrate-capabilities`` reports them (REF §6.1), under their QMP (hyphenated) names. Plug-ins
add their own with ``register()``. ``check_set()`` is ``migrate-set-capabilities``' validation: the
same constraints, with QEMU's error texts.

Properties, as the negotiation modes read them (DESIGN §3):

* ``side_effect``: enabling it changes what the guest, the host or the operator sees beyond the
  wire format (a throttled guest, pinned host memory, a migration that waits for a command, a
  different kind of operation). A negotiation never turns such a capability on by itself.
  Set for auto-converge and dirty-limit (guest slowdown), rdma-pin-all and zero-copy-send (locked
  host memory), pause-before-switchover (waits for ``migrate-continue``), release-ram (the source
  frees its pages during postcopy), x-colo and background-snapshot (a different operation),
  x-ignore-shared and mapped-ram (correct only with shared memory / a file target).
* ``needs_both_sides``: both endpoints must agree for the migration to work (REF §6.1 "needed on").
* ``on_wire``: it changes the records the destination must parse (xbzrle, plug-in encoders). A
  destination whose version lacks it cannot decode those records; negotiation modes drop it
  unless both sides support it.
* ``since``: the first QEMU version that knows it (QAPI "since" notes); an endpoint given only a
  ``version`` supports exactly the capabilities with ``since`` at or below it. Plug-ins have
  ``since=None``: no QEMU release knows them, so only an explicit ``supports`` list (or an endpoint
  with neither version nor list, "the newest") has them.
* ``excludes`` / ``requires``: what ``migrate-set-capabilities`` refuses. ``excludes`` is symmetric:
  the built-in table lists each conflict on both capabilities; ``incompatible()`` also honours
  plug-ins that declare it on one side only.

The simulator has no transport choice, so ``rdma-pin-all`` stands for "migrating over RDMA": it
carries QEMU's RDMA transport checks (no xbzrle, multifd or postcopy-ram). The host-dependent
checks (dirty-limit needs KVM with a dirty ring, postcopy needs userfaultfd, zero-copy needs no
compression and no TLS) are taken as satisfied.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["CAPABILITIES", "Capability", "check_set", "incompatible", "mismatch", "parse_version",
           "register", "supported_by"]


@dataclass(frozen=True, slots=True)
class Capability:
    """One migration capability (a QMP ``MigrationCapability``) and how it combines with others."""

    name: str
    side_effect: bool = False
    needs_both_sides: bool = False
    excludes: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    doc: str = ""
    on_wire: bool = False
    since: str | None = None


# QEMU's constraints (migrate_caps_check and migrate_rdma_caps_check in migration/options.c) with
# their error texts: (capability, other, text). The first kind makes the two exclusive, the second
# makes the first need the other.
_EXCLUSIONS: tuple[tuple[str, str, str], ...] = (
    ("rdma-pin-all", "xbzrle", "RDMA and XBZRLE can't be used together"),
    ("rdma-pin-all", "multifd", "RDMA and multifd can't be used together"),
    ("rdma-pin-all", "postcopy-ram", "RDMA and postcopy-ram can't be used together"),
    ("postcopy-ram", "x-ignore-shared", "Postcopy is not compatible with ignore-shared"),
    *(
        ("background-snapshot", other, f"Background-snapshot is not compatible with {other}")
        for other in (
            "postcopy-ram", "dirty-bitmaps", "postcopy-blocktime", "late-block-activate",
            "return-path", "multifd", "pause-before-switchover", "auto-converge", "release-ram",
            "rdma-pin-all", "xbzrle", "x-colo", "validate-uuid", "zero-copy-send",
        )
    ),
    ("zero-copy-send", "xbzrle",
     "Zero copy only available for non-compressed non-TLS multifd migration"),
    ("dirty-limit", "auto-converge",
     "dirty-limit conflicts with auto-converge either of then available currently"),
    ("multifd", "xbzrle", "Multifd is not compatible with xbzrle"),
    ("mapped-ram", "xbzrle", "Mapped-ram migration is incompatible with xbzrle"),
    ("mapped-ram", "postcopy-ram", "Mapped-ram migration is incompatible with postcopy"),
)
_REQUIREMENTS: tuple[tuple[str, str, str], ...] = (
    ("zero-copy-send", "multifd",
     "Zero copy only available for non-compressed non-TLS multifd migration"),
    ("postcopy-preempt", "postcopy-ram", "Postcopy preempt requires postcopy-ram"),
    ("switchover-ack", "return-path",
     "Capability 'switchover-ack' requires capability 'return-path'"),
)
_MESSAGES: dict[tuple[str, str], str] = {}
for _cap, _other, _text in _EXCLUSIONS:
    _MESSAGES[_cap, _other] = _MESSAGES[_other, _cap] = _text
_REQUIRE_MESSAGES = {(cap, other): text for cap, other, text in _REQUIREMENTS}

# name, side_effect, needs_both_sides, since (QAPI), doc (REF §6.1), in QAPI enum order
_BUILT_IN: tuple[tuple[str, bool, bool, str, str], ...] = (
    ("xbzrle", False, False, "1.2",
     "XBZRLE delta pages; the source encodes, any destination that knows it decodes"),
    ("rdma-pin-all", True, False, "2.0", "pin all guest RAM for RDMA (here: migrate over RDMA)"),
    ("auto-converge", True, False, "1.6",
     "throttle the guest's vCPUs when dirtying outpaces sending"),
    ("events", False, False, "2.4", "emit MIGRATION and MIGRATION_PASS events"),
    ("postcopy-ram", False, True, "2.6", "allow a switch to postcopy (migrate-start-postcopy)"),
    ("x-colo", True, True, "2.8", "COLO fault tolerance: continuous checkpoints"),
    ("release-ram", True, False, "2.9", "free source pages as they are sent in postcopy"),
    ("return-path", False, False, "2.10", "a destination-to-source channel in precopy"),
    ("pause-before-switchover", True, False, "2.11",
     "stop in pre-switchover until migrate-continue"),
    ("multifd", False, True, "4.0", "send pages over several parallel channels"),
    ("dirty-bitmaps", False, True, "2.12", "migrate block dirty bitmaps"),
    ("postcopy-blocktime", False, False, "3.0",
     "postcopy blocktime statistics on the destination"),
    ("late-block-activate", False, False, "3.0", "legacy: delay block activation to VM start"),
    ("x-ignore-shared", True, True, "4.0", "do not send shared RAM blocks"),
    ("validate-uuid", False, False, "4.2",
     "the source sends its UUID; the destination compares"),
    ("background-snapshot", True, False, "6.0",
     "snapshot with write tracking instead of migrating"),
    ("zero-copy-send", True, False, "7.1",
     "MSG_ZEROCOPY for multifd (locks pages in host memory)"),
    ("postcopy-preempt", False, True, "7.1", "a separate channel for postcopy page requests"),
    ("switchover-ack", False, True, "8.1", "wait for the destination's ACK before switchover"),
    ("dirty-limit", True, False, "8.1", "limit each vCPU's dirty rate through the dirty ring"),
    ("mapped-ram", True, True, "9.0", "fixed-offset file format (file migration)"),
)
_ON_WIRE = frozenset({"xbzrle"})


def _built_in() -> dict[str, Capability]:
    excludes: dict[str, list[str]] = {name: [] for name, *_ in _BUILT_IN}
    for cap, other, _text in _EXCLUSIONS:
        excludes[cap].append(other)
        excludes[other].append(cap)
    requires: dict[str, list[str]] = {name: [] for name, *_ in _BUILT_IN}
    for cap, other, _text in _REQUIREMENTS:
        requires[cap].append(other)
    return {
        name: Capability(name, side_effect, both, tuple(excludes[name]), tuple(requires[name]),
                         doc, on_wire=name in _ON_WIRE, since=since)
        for name, side_effect, both, since, doc in _BUILT_IN
    }


#: every known capability by QMP name: QEMU's in QAPI enum order, then plug-ins as registered
CAPABILITIES: dict[str, Capability] = _built_in()


def register(capability: Capability) -> Capability:
    """Add a plug-in's capability (DESIGN §9). Registering an identical one again is a no-op.

    Raises:
        ValueError: a capability of that name exists with different properties.
    """
    existing = CAPABILITIES.get(capability.name)
    if existing is not None and existing != capability:
        msg = (f"capability '{capability.name}' is already registered with other properties "
               f"({existing!r})")
        raise ValueError(msg)
    CAPABILITIES[capability.name] = capability
    return capability


def incompatible(first: str, second: str) -> bool:
    """Whether QEMU refuses ``first`` and ``second`` together (declared on either side)."""
    a, b = CAPABILITIES.get(first), CAPABILITIES.get(second)
    return (a is not None and second in a.excludes) or (b is not None and first in b.excludes)


def check_set(enabled: Iterable[str]) -> None:
    """Validate a set of enabled capabilities as ``migrate-set-capabilities`` does.

    Raises:
        ValueError: an unknown name, or the first broken constraint, in QEMU's words where QEMU
            has them (e.g. "Multifd is not compatible with xbzrle").
    """
    on = set(enabled)
    for name in sorted(on - CAPABILITIES.keys()):
        msg = f"capability '{name}' is not known"
        raise ValueError(msg)
    for cap in CAPABILITIES.values():
        if cap.name not in on:
            continue
        for other in cap.requires:
            if other not in on:
                default = f"Capability '{cap.name}' requires capability '{other}'"
                raise ValueError(_REQUIRE_MESSAGES.get((cap.name, other), default))
        for other in cap.excludes:
            if other in on:
                default = f"Capability '{cap.name}' is not compatible with '{other}'"
                raise ValueError(_MESSAGES.get((cap.name, other), default))


def parse_version(version: str) -> tuple[int, int, int]:
    """ "7.2" → (7, 2, 0); "2.10.1" → (2, 10, 1)."""
    major, minor, micro = (*(int(x) for x in version.split(".")), 0, 0, 0)[:3]
    return major, minor, micro


def supported_by(version: str | None, supports: Iterable[str] | None = None) -> tuple[str, ...]:
    """What an endpoint can do, in registry order: an explicit ``supports`` list wins; else every
    capability a QEMU of ``version`` knows; with neither, every registered capability."""
    if supports is not None:
        wanted = set(supports)
        return tuple(name for name in CAPABILITIES if name in wanted)
    if version is None:
        return tuple(CAPABILITIES)
    v = parse_version(version)
    return tuple(name for name, cap in CAPABILITIES.items()
                 if cap.since is not None and parse_version(cap.since) <= v)


# How QEMU reports a needs_both_sides capability that only one side has (REF §6.1, §8.3), as
# (capability, on at the source) -> the destination's error. Texts in REF are QEMU's; the multifd
# ones are migsim's (REF says only "channel/handshake errors"). Mismatches not listed here fail
# later (switchover-ack: the ACK never comes) or not visibly (REF's "–").
_MISMATCH: dict[tuple[str, bool], str] = {
    ("postcopy-ram", True): "RAM postcopy is disabled but have 16 byte advise",
    ("x-ignore-shared", True): "Capability x-ignore-shared is off, but received capability is on",
    ("x-ignore-shared", False): "Capability x-ignore-shared is on, but received capability is off",
    ("mapped-ram", True): "Capability mapped-ram is off, but received capability is on",
    ("mapped-ram", False): "Capability mapped-ram is on, but received capability is off",
    ("multifd", True): "migsim: multifd is on at the source only: the destination rejects its "
                       "extra channels",
    ("multifd", False): "migsim: multifd is on at the destination only: it waits for channels "
                        "that never come",
}


def mismatch(source: Iterable[str], destination: Iterable[str]) -> str | None:
    """The destination's error at setup for the first both-sides mismatch QEMU detects then
    (REF §6.1), or None."""
    src, dst = set(source), set(destination)
    for name, cap in CAPABILITIES.items():
        if cap.needs_both_sides and (name in src) != (name in dst):
            text = _MISMATCH.get((name, name in src))
            if text is not None:
                return text
    return None


@dataclass(frozen=True, slots=True)
class InForce:
    """What the negotiation left in force for one migration (built by :mod:`sim.negotiation`).

    The engine asks ``is_enabled()``, never the scenario: a capability the operator asked for
    may have been dropped by management or by the in-band handshake.
    """

    capabilities: frozenset[str]  # in force on the source
    # on-wire capabilities whose records the destination can parse (REF §8.2: its version knows
    # them, whatever its own flags say)
    dest_decodes: frozenset[str] = frozenset({"xbzrle"})
    # switchover-ack on the source without the destination's: the ACK never comes (REF §6.1)
    switchover_blocked: bool = False

    def is_enabled(self, name: str) -> bool:
        return name in self.capabilities

    @property
    def pauses_before_switchover(self) -> bool:
        """The switchover waits in ``pre-switchover`` for ``migrate-continue``."""
        return "pause-before-switchover" in self.capabilities


def qemu_in_force(source_enabled: Iterable[str], destination_supports: Iterable[str],
                  destination_enabled: Iterable[str]) -> InForce:
    """What QEMU itself puts in force from the two sides' settings (REF §6.1, §8.2).

    The source runs with its own set. The destination parses every record its version knows,
    whatever its flags. ``switchover-ack`` on the source alone blocks the switchover.
    """
    src, dst = set(source_enabled), set(destination_enabled)
    on_wire = frozenset(c for c in destination_supports if CAPABILITIES[c].on_wire)
    blocked = "switchover-ack" in src and "switchover-ack" not in dst
    return InForce(frozenset(src), on_wire, switchover_blocked=blocked)
