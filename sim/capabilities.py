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

__all__ = ["CAPABILITIES", "Capability", "check_set", "incompatible", "register"]


@dataclass(frozen=True, slots=True)
class Capability:
    """One migration capability (a QMP ``MigrationCapability``) and how it combines with others."""

    name: str
    side_effect: bool = False
    needs_both_sides: bool = False
    excludes: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    doc: str = ""


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

# name, side_effect, needs_both_sides, doc (REF §6.1), in QAPI enum order
_BUILT_IN: tuple[tuple[str, bool, bool, str], ...] = (
    ("xbzrle", False, False, "XBZRLE delta pages; the source encodes, any destination decodes"),
    ("rdma-pin-all", True, False, "pin all guest RAM for RDMA (here: migrate over RDMA)"),
    ("auto-converge", True, False, "throttle the guest's vCPUs when dirtying outpaces sending"),
    ("events", False, False, "emit MIGRATION and MIGRATION_PASS events"),
    ("postcopy-ram", False, True, "allow a switch to postcopy (migrate-start-postcopy)"),
    ("x-colo", True, True, "COLO fault tolerance: continuous checkpoints"),
    ("release-ram", True, False, "free source pages as they are sent in postcopy"),
    ("return-path", False, False, "a destination-to-source channel in precopy"),
    ("pause-before-switchover", True, False, "stop in pre-switchover until migrate-continue"),
    ("multifd", False, True, "send pages over several parallel channels"),
    ("dirty-bitmaps", False, True, "migrate block dirty bitmaps"),
    ("postcopy-blocktime", False, False, "postcopy blocktime statistics on the destination"),
    ("late-block-activate", False, False, "legacy: delay block activation to VM start"),
    ("x-ignore-shared", True, True, "do not send shared RAM blocks"),
    ("validate-uuid", False, False, "the source sends its UUID; the destination compares"),
    ("background-snapshot", True, False, "snapshot with write tracking instead of migrating"),
    ("zero-copy-send", True, False, "MSG_ZEROCOPY for multifd (locks pages in host memory)"),
    ("postcopy-preempt", False, True, "a separate channel for postcopy page requests"),
    ("switchover-ack", False, True, "wait for the destination's ACK before switchover"),
    ("dirty-limit", True, False, "limit each vCPU's dirty rate through the dirty ring"),
    ("mapped-ram", True, True, "fixed-offset file format (file migration)"),
)


def _built_in() -> dict[str, Capability]:
    excludes: dict[str, list[str]] = {name: [] for name, *_ in _BUILT_IN}
    for cap, other, _text in _EXCLUSIONS:
        excludes[cap].append(other)
        excludes[other].append(cap)
    requires: dict[str, list[str]] = {name: [] for name, *_ in _BUILT_IN}
    for cap, other, _text in _REQUIREMENTS:
        requires[cap].append(other)
    return {
        name: Capability(name, side_effect, both, tuple(excludes[name]), tuple(requires[name]), doc)
        for name, side_effect, both, doc in _BUILT_IN
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
