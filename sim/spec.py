"""The scenario as data: frozen dataclasses, one per YAML section, every quantity in SI units.

YAML key = dataclass field = ``--set`` key (DESIGN §4). Sizes are ``int`` bytes, rates ``float``
bytes per second, times ``float`` seconds. ``sim.scenario`` turns YAML into these; the engine only
reads them. Defaults are QEMU's (REF §6.2) unless a docstring says otherwise.

Field metadata drives the generic YAML conversion in ``sim.scenario`` (no key lists there):
``unit`` (``size`` | ``rate`` | ``time``: the value takes units), bounds ``gt`` / ``ge`` / ``le`` (in SI
units), ``pow2`` (a power of two), ``choices`` (the valid strings), ``registry`` (``workloads`` |
``capabilities``: names from that registry; ``check_set`` also validates the set as
``migrate-set-capabilities`` does), ``qmp`` (the QEMU parameter the field is, see
:mod:`sim.parameters`), ``inline`` (the nested section's keys sit in the parent mapping)
and ``yaml=False`` (not a YAML key).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.choices import NEGOTIATION_MODES, WRITE_PATTERNS
from sim.cluster.spec import ClusterSpec
from sim.parameters import spec_metadata as qemu
from sim.units import GiB, KiB, MiB


@dataclass(frozen=True, slots=True)
class RegionSpec:
    """An address range that confines a workload's writes (bytes from the start of guest RAM)."""

    offset: int = field(default=0, metadata={"unit": "size", "ge": 0})
    size: int = field(default=0, metadata={"unit": "size", "gt": 0})


@dataclass(frozen=True, slots=True)
class PhaseSpec:
    """One phase of a ``phased`` workload: another workload for ``duration`` seconds.

    At least 1 ms: the engine draws writes per chunk of up to 50 ms, one slice per phase
    boundary in it, so nanosecond phases made a chunk loop millions of times."""

    duration: float = field(metadata={"unit": "time", "ge": 1e-3})
    # YAML writes a phase flat, {duration, <workload keys>}: "inline" merges its keys into the item
    workload: WorkloadSpec = field(metadata={"inline": True})


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """How the guest writes its memory (DESIGN §3, Workloads).

    ``writes_per_s`` counts page writes before auto-converge throttling. ``write_size`` bytes change
    per write, laid out by ``write_pattern``; those decide how well XBZRLE does.
    """

    # a name of sim.workloads.WORKLOADS: idle, uniform, hotspot, ...
    kind: str = field(default="idle", metadata={"registry": "workloads"})
    writes_per_s: float = field(default=0.0, metadata={"ge": 0})
    # hotspot: bytes of the hot region (default: 1/16 of RAM)
    hot_set: int | None = field(default=None, metadata={"unit": "size", "gt": 0})
    # hotspot: share of writes that land in the hot region
    hot_probability: float = field(default=0.9, metadata={"ge": 0, "le": 1})
    # zipf: popularity exponent s (> 1); page rank r has weight r^-s
    zipf_exponent: float = field(default=1.1, metadata={"gt": 1})
    # bytes changed per write
    write_size: int = field(default=64, metadata={"unit": "size", "gt": 0})
    write_pattern: str = field(default="clustered", metadata={"choices": WRITE_PATTERNS})
    region: RegionSpec | None = None
    # sequential: bytes between consecutive writes (default: a page)
    stride: int | None = field(default=None, metadata={"unit": "size", "gt": 0})
    # sequential: where in the region the writer is at t = 0, bytes from the region's start
    # (where a guest that ran before the migration has got to; default: its start)
    position: int = field(default=0, metadata={"unit": "size", "ge": 0})
    # counter pattern: width of each incremented word
    word_size: int = field(default=8, metadata={"unit": "size", "gt": 0})
    phases: tuple[PhaseSpec, ...] = ()
    trace: str | None = None  # trace: path of a CSV/Parquet dirty log with columns t_s, page
    # replay: a `migsim capture` folder (relative to the scenario file's folder)
    capture: str | None = None
    # writes paced by a guest timer of this period (a tick's writes in one burst), not by the CPU:
    # a CPU throttle then slows the guest only by the ticks lost while its vCPU sleeps
    # (sim.engine.throttle.paced_share); unset: CPU-bound, the rate scales with 1 - throttle
    timer_tick: float | None = field(default=None, metadata={"unit": "time", "gt": 0})


@dataclass(frozen=True, slots=True)
class VmSpec:
    """The guest: RAM size, page size, content mode and non-RAM device state."""

    memory: int = field(default=1 * GiB, metadata={"unit": "size", "gt": 0})
    page_size: int = field(default=4 * KiB, metadata={"unit": "size", "gt": 0, "pow2": True})
    content: str = field(default="modelled", metadata={"choices": ("modelled", "exact")})
    # share of pages that are zero at the start
    zero_fraction: float = field(default=0.0, metadata={"ge": 0, "le": 1})
    # where they are: each page zero with probability zero_fraction (random), or the lowest
    # round(zero_fraction x pages) pages (first: a guest whose only untouched memory is low,
    # as migsim's validation guest below 1 MiB); the scan meets them first
    zero_placement: str = field(default="random", metadata={"choices": ("random", "first")})
    # address ranges (bytes from the start of guest RAM, whole pages) that are zero at the
    # start besides those: a guest whose zero pages are known, such as QEMU's firmware blocks,
    # which its scan meets after the guest's RAM (pc.rom, most of the ACPI tables)
    zero_regions: tuple[RegionSpec, ...] = ()
    # non-RAM state sent during downtime
    device_state: int = field(default=1 * MiB, metadata={"unit": "size", "ge": 0})
    vcpus: int = field(default=1, metadata={"ge": 1})


@dataclass(frozen=True, slots=True)
class BandwidthChange:
    """From ``at`` seconds on, the link carries ``bandwidth`` bytes/s."""

    at: float = field(metadata={"unit": "time", "ge": 0})
    bandwidth: float = field(metadata={"unit": "rate", "gt": 0})


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """Something that goes wrong at sim time ``at`` (seconds from the start of the run).

    * ``link_down``: no byte moves for ``duration`` (a cut cable, a flapping switch port);
    * ``bandwidth_drop``: the link runs at ``bandwidth`` for ``duration`` (0: for good);
    * ``destination_crash``: the destination QEMU dies;
    * ``cancel``: management issues ``migrate_cancel``.

    ``vm`` picks the guest of a fleet a crash or cancel hits (default: every guest).
    """

    kind: str = field(metadata={"choices": ("link_down", "bandwidth_drop", "destination_crash",
                                            "cancel")})
    at: float = field(metadata={"unit": "time", "ge": 0})
    duration: float = field(default=0.0, metadata={"unit": "time", "ge": 0})
    bandwidth: float = field(default=0.0, metadata={"unit": "rate", "ge": 0})
    vm: str | None = None


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """The network between source and destination."""

    bandwidth: float = field(default=10e9 / 8, metadata={"unit": "rate", "gt": 0})  # 10 Gbit/s
    latency: float = field(default=0.0, metadata={"unit": "time", "ge": 0})
    schedule: tuple[BandwidthChange, ...] = ()
    faults: tuple[FaultSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class MigrationSpec:
    """QEMU's migration parameters (snake_case of REF §6.2) plus the simulator's own policies.

    A QEMU parameter's bounds and choices come from :mod:`sim.parameters` (``qemu(name)``), the
    one table of them, in SI units here; its default is QEMU's.
    """

    # sim time at which `migrate` is issued
    start: float = field(default=0.0, metadata={"unit": "time", "ge": 0})
    # QEMU: 0..2 000 000 ms
    downtime_limit: float = field(default=0.3, metadata=qemu("downtime-limit"))
    # 0 = unlimited
    # None: the default of qemu_version (128 MiB/s; 32 MiB/s before 5.2)
    max_bandwidth: float | None = field(default=None, metadata=qemu("max-bandwidth"))
    # 0 = use the measured estimate
    avail_switchover_bandwidth: float = field(default=0.0,
                                              metadata=qemu("avail-switchover-bandwidth"))
    # QEMU: a power of two no less than the page size (checked against vm.page_size)
    xbzrle_cache_size: int = field(default=64 * MiB, metadata=qemu("xbzrle-cache-size"))
    # what the operator enables on the source
    capabilities: tuple[str, ...] = field(
        default=(), metadata={"registry": "capabilities", "check_set": True}
    )
    # management-side cancel after this long (like guestperf)
    max_time: float | None = field(default=None, metadata={"unit": "time", "gt": 0})
    # hard cap: a run that has not ended by then is "not converged"
    max_sim_time: float = field(default=3600.0, metadata={"unit": "time", "gt": 0})
    qemu_version: str = "10.2"
    switchover: str = field(default="qemu", metadata={"choices": ("qemu", "rounds")})
    # rounds policy: stop-and-copy after this many live passes
    max_passes: int | None = field(default=None, metadata={"ge": 1})
    # none | legacy | multifd (= main thread without multifd)
    zero_page_detection: str = field(default="multifd", metadata=qemu("zero-page-detection"))
    # x-clear-bitmap-shift: dirty-log clear chunk = 2^shift pages (QEMU: 6..31)
    clear_bitmap_shift: int = field(default=18, metadata={"ge": 6, "le": 31})
    # auto-converge (QEMU migration/ram.c, migration_trigger_throttle): dirtied > this % of sent bytes in a period counts toward a step
    throttle_trigger_threshold: int = field(default=50, metadata=qemu("throttle-trigger-threshold"))
    cpu_throttle_initial: int = field(default=20, metadata=qemu("cpu-throttle-initial"))  # %
    cpu_throttle_increment: int = field(default=10, metadata=qemu("cpu-throttle-increment"))  # %
    cpu_throttle_tailslow: bool = field(default=False, metadata=qemu("cpu-throttle-tailslow"))
    # % (QEMU: at least cpu_throttle_initial)
    max_cpu_throttle: int = field(default=99, metadata=qemu("max-cpu-throttle"))
    # post-copy (QEMU migration/migration.c, postcopy_start; needs postcopy-ram in force): management's migrate-start-postcopy this
    # long after the start, after this many passes, or once a pass leaves no less than the last
    postcopy_after: float | None = field(default=None, metadata={"unit": "time", "ge": 0})
    postcopy_after_passes: int | None = field(default=None, metadata={"ge": 1})
    postcopy_on_stall: bool = False
    # background push rate after the switch (0 = unlimited)
    max_postcopy_bandwidth: float = field(default=0.0, metadata=qemu("max-postcopy-bandwidth"))
    # multifd (QEMU migration/multifd.c; needs multifd in force): channels and compression of the page packets
    multifd_channels: int = field(default=2, metadata=qemu("multifd-channels"))
    multifd_compression: str = field(default="none", metadata=qemu("multifd-compression"))
    multifd_zlib_level: int = field(default=1, metadata=qemu("multifd-zlib-level"))
    multifd_zstd_level: int = field(default=1, metadata=qemu("multifd-zstd-level"))
    # dirty-limit (QEMU system/dirtylimit.c): each vCPU's dirty-page quota once triggered (QEMU: MB/s, here MiB/s)
    vcpu_dirty_limit: float = field(default=1 * MiB, metadata=qemu("vcpu-dirty-limit"))


@dataclass(frozen=True, slots=True)
class SourceCpuSpec:
    """The source migration thread's own time (DESIGN §3): it is one thread, and when the link is
    fast its work, not the link, sets the pace. Defaults: see README "Source CPU time" (QEMU's
    XBZRLE encoder measured in REF §11.2; memory scan and copy measured on this machine class by
    ``benchmarks/calibrate_cpu.py``). All zero turns the model off."""

    # fixed cost per page sent (bitmap search, record header, socket write, amortised)
    per_page: float = field(default=0.25e-6, metadata={"unit": "time", "ge": 0})
    # reading a page for the zero-page test (0: free)
    scan_rate: float = field(default=12e9, metadata={"unit": "rate", "ge": 0})
    # copying a raw page into the socket buffer (0: free)
    copy_rate: float = field(default=8e9, metadata={"unit": "rate", "ge": 0})
    # XBZRLE: comparing the page with its cached copy (0: free) ...
    xbzrle_rate: float = field(default=5.6e9, metadata={"unit": "rate", "ge": 0})
    # ... plus this per byte of the record that is not a changed byte (the run lengths; the
    # changed bytes are copied): 15 ns, fitted to QEMU's migration/xbzrle.c encoder's times
    xbzrle_per_byte: float = field(default=15e-9, metadata={"unit": "time", "ge": 0})
    # multifd compression, per channel thread, bytes of page input per second (level 1;
    # benchmarks/calibrate_cpu.py measures them on the workload-like synthetic pages)
    zlib_rate: float = field(default=30e6, metadata={"unit": "rate", "ge": 0})
    zstd_rate: float = field(default=2e9, metadata={"unit": "rate", "ge": 0})
    # a dirty-bitmap sync, per guest page (the thread stalls; the guest runs on). QEMU merges
    # the dirty bitmaps a 64-bit word (64 pages) at a time and skips clean words
    # (cpu_physical_memory_sync_dirty_bitmap), so about 2 ns per 64 pages, not per page
    sync_per_page: float = field(default=2e-9 / 64, metadata={"unit": "time", "ge": 0})
    # cores multifd's channel threads can use at once (0: one per channel, a large server); with
    # fewer cores than channels the channels' work divides by the cores. Fractional: what the
    # channels gain on a host whose cores both ends share (migsim calibrate fits it)
    cores: float = field(default=0.0, metadata={"ge": 0})

    @classmethod
    def free(cls) -> SourceCpuSpec:
        """A thread that costs nothing: pages leave at link rate (closed forms, papers)."""
        return cls(per_page=0.0, scan_rate=0.0, copy_rate=0.0, xbzrle_rate=0.0,
                   xbzrle_per_byte=0.0, zlib_rate=0.0, zstd_rate=0.0, sync_per_page=0.0)


@dataclass(frozen=True, slots=True)
class DestinationCpuSpec:
    """The destination's receive and load path (QEMU's ``ram_load_precopy``): the stream moves
    no faster than the slower end, so each record's load time is accounted beside the source's
    and the link's, and a chunk ends at the latest of the three.

    The defaults are 0: on a server the destination keeps up (its work per page, a copy into
    guest RAM, is less than the source's scan and copy), so the source or the link sets the pace.
    A host profile measured on a slower or shared host sets them. ``shares_source_cpu``: both
    ends run on one core (loopback on a small host), so their times add instead of overlapping.
    """

    # fixed cost per record received (header, block lookup), every kind
    per_page: float = field(default=0.0, metadata={"unit": "time", "ge": 0})
    # placing a raw page into guest RAM (0: free)
    copy_rate: float = field(default=0.0, metadata={"unit": "rate", "ge": 0})
    # a zero-page record (QEMU's ram_handle_zero: clear the page unless it is zero already)
    zero_page: float = field(default=0.0, metadata={"unit": "time", "ge": 0})
    # decoding an XBZRLE record into its page (xbzrle_decode_buffer), per record
    xbzrle_page: float = field(default=0.0, metadata={"unit": "time", "ge": 0})
    # the first raw page into a page of the destination's RAM: a page fault and a fresh page
    # from the kernel (later records of that page land in memory already mapped)
    first_touch: float = field(default=0.0, metadata={"unit": "time", "ge": 0})
    # both ends on one core: source and destination times add
    shares_source_cpu: bool = False


@dataclass(frozen=True, slots=True)
class SwitchoverCostSpec:
    """The switchover's fixed costs, which QEMU's threshold test does not know, so downtime can
    exceed the limit (REF: migration_completion_precopy, qemu_loadvm_state).

    ``stop``: from the decision to the last sync (stopping the vCPUs, ``finish-migrate``,
    inactivating block devices); it is downtime. ``start``: after the last byte, the destination
    loads the device state and starts the guest; with a return path the source waits for its
    reply, so it counts in the source's downtime. Defaults 0 (not measured on a KVM server here);
    a host profile sets them.

    ``paced_stop``: ``stop`` when the live phase before it was paced by ``max-bandwidth`` (the
    last 100 ms window spent its budget, so the migration thread and the destination slept
    between windows). On the Firecracker VMs ``migsim calibrate`` was first run on, QEMU's
    switchover after such a phase took 4-10 ms where one after an unlimited stream took 2-3 at
    some times, and 1-2 ms at others, the same QEMU and guest (a state of the host's that was
    not pinned down; docs/validation.md).
    ``None`` (the default): the same as ``stop``. Fitted by ``migsim calibrate`` from a paced
    run.
    """

    stop: float = field(default=0.0, metadata={"unit": "time", "ge": 0, "le": 3600})
    start: float = field(default=0.0, metadata={"unit": "time", "ge": 0, "le": 3600})
    paced_stop: float | None = field(default=None,
                                     metadata={"unit": "time", "ge": 0, "le": 3600})


@dataclass(frozen=True, slots=True)
class WireSpec:
    """Record sizes on the wire (REF §2.7); overridable for oracle scenarios."""

    page_header: int = field(default=8, metadata={"unit": "size", "ge": 0})
    zero_page: int = field(default=9, metadata={"unit": "size", "ge": 0})
    xbzrle_header: int = field(default=11, metadata={"unit": "size", "ge": 0})
    chunk_overhead: int = field(default=18, metadata={"unit": "size", "ge": 0})


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """One migration endpoint: what its QEMU can do (``supports``) and what is set (``enabled``).

    ``supports=None`` means: what ``version`` knows (each capability's "since" in
    :mod:`sim.capabilities`), or, with no version either, everything this simulator models.
    An explicit ``supports`` list wins over the version.
    """

    # QEMU version of this endpoint, e.g. "1.1" or "7.2" (None: the newest, knows everything)
    version: str | None = None

    supports: tuple[str, ...] | None = field(
        default=None, metadata={"registry": "capabilities"}
    )
    enabled: tuple[str, ...] = field(
        default=(), metadata={"registry": "capabilities", "check_set": True}
    )


@dataclass(frozen=True, slots=True)
class EndpointsSpec:
    source: EndpointSpec = field(default_factory=EndpointSpec)
    destination: EndpointSpec = field(default_factory=EndpointSpec)


@dataclass(frozen=True, slots=True)
class GuestSpec:
    """One guest of a fleet scenario (``vms:``): its own VM, workload, migration and endpoints.

    Items default to the top-level sections; every guest shares the scenario's one ``link``.
    """

    name: str = ""
    vm: VmSpec = field(default_factory=VmSpec)
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    migration: MigrationSpec = field(default_factory=MigrationSpec)
    endpoints: EndpointsSpec = field(default_factory=EndpointsSpec)


@dataclass(frozen=True, slots=True)
class ControllerSpec:
    """A management controller beside each migration (``controller:``, :mod:`sim.controllers`).

    ``kind`` is a built-in (``none``, ``libvirt``, ``nova``, ``kubevirt``, ``vmotion-like``) or
    ``module:Class`` for a plug-in :class:`sim.Controller`. The other keys are the knobs of the
    built-ins; None takes the controller's own default, and a key its controller does not read
    is refused. ``*_per_gib`` times are multiplied by the guest's RAM in GiB, as nova and
    KubeVirt do.
    """

    # a built-in (none, libvirt, nova, kubevirt, vmotion-like) or module:Class (a plug-in)
    kind: str = "none"
    # how often it reads query-migrate (None: the controller's own interval); at least 10 ms
    # (management clients poll every 50 ms to seconds; finer would only cost simulation time)
    poll_interval: float | None = field(default=None, metadata={"unit": "time", "ge": 0.01})
    # libvirt: virsh migrate --timeout (seconds after the start)
    timeout: float | None = field(default=None, metadata={"unit": "time", "gt": 0})
    # what a timeout does: suspend | postcopy (libvirt), abort | force_complete (nova)
    timeout_action: str | None = field(default=None, metadata={
        "choices": ("suspend", "postcopy", "abort", "force_complete")})
    # nova: live_migration_downtime; kubevirt: the ramp's ceiling; vmotion-like: the goal
    downtime: float | None = field(default=None, metadata={"unit": "time", "gt": 0})
    # kubevirt: where the downtime ramp starts
    downtime_start: float | None = field(default=None, metadata={"unit": "time", "gt": 0})
    # nova: live_migration_downtime_steps; kubevirt: steps from the start to the ceiling
    steps: int | None = field(default=None, metadata={"ge": 1, "le": 1000})
    # nova: live_migration_downtime_delay (per GiB of RAM); kubevirt: time between ramp steps
    step_delay: float | None = field(default=None, metadata={"unit": "time", "ge": 0})
    # kubevirt: the pause after the bulk pass before the ramp starts
    cooldown: float | None = field(default=None, metadata={"unit": "time", "ge": 0})
    # nova: live_migration_completion_timeout; kubevirt: completionTimeoutPerGiB (0: none)
    completion_timeout_per_gib: float | None = field(default=None,
                                                     metadata={"unit": "time", "ge": 0})
    # nova: live_migration_permit_post_copy; kubevirt: allowPostCopy (needs postcopy-ram)
    permit_postcopy: bool | None = None
    # kubevirt: parallelOutboundMigrationsPerNode (a fleet's guests share one source host)
    parallel_outbound: int | None = field(default=None, metadata={"ge": 1, "le": 1000})
    # vmotion-like: the longest vCPU pause in one poll interval, as a share of it
    max_stun: float | None = field(default=None, metadata={"gt": 0, "le": 1})


@dataclass(frozen=True, slots=True)
class SweepSpec:
    """A run per combination of ``grid`` values (and per ``zip`` row), times ``repeats`` seeds."""

    grid: tuple[tuple[str, tuple[object, ...]], ...] = ()
    zip: tuple[tuple[str, tuple[object, ...]], ...] = ()
    repeats: int = field(default=1, metadata={"ge": 1})


@dataclass(frozen=True, slots=True)
class Scenario:
    """Everything one run needs. ``params`` holds the swept values of a sweep member."""

    name: str = "scenario"
    # the tables hold seeds as int64, and a sweep adds up to 10 000 repeats to it
    seed: int = field(default=0, metadata={"ge": 0, "le": 2**63 - 1 - 10_000})
    vm: VmSpec = field(default_factory=VmSpec)
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    link: LinkSpec = field(default_factory=LinkSpec)
    migration: MigrationSpec = field(default_factory=MigrationSpec)
    wire: WireSpec = field(default_factory=WireSpec)
    source_cpu: SourceCpuSpec = field(default_factory=SourceCpuSpec)
    destination_cpu: DestinationCpuSpec = field(default_factory=DestinationCpuSpec)
    switchover_cost: SwitchoverCostSpec = field(default_factory=SwitchoverCostSpec)
    # how the source's vCPUs run: under TCG a dirty-bitmap sync waits for throttled vCPUs
    accelerator: str = field(default="kvm", metadata={"choices": ("kvm", "tcg")})
    endpoints: EndpointsSpec = field(default_factory=EndpointsSpec)
    negotiation: str = field(default="qemu", metadata={"choices": tuple(NEGOTIATION_MODES)})
    plugins: tuple[str, ...] = ()
    # a management controller beside each migration (None: the operator alone)
    controller: ControllerSpec | None = None
    # several guests sharing the link (DESIGN §4); empty: the one guest of the top-level sections
    vms: tuple[GuestSpec, ...] = ()
    # hosts, a network, guests placed on hosts and a plan of migrations (sim.cluster); with it,
    # vms: lists the kinds of guest the cluster's guests are instances of
    cluster: ClusterSpec | None = None
    sweep: SweepSpec | None = None
    # set on sweep members: (dotted key, value), values in SI units; ("repeat", i) when repeats > 1
    params: tuple[tuple[str, object], ...] = ()
    # where it was loaded from (for messages); not a YAML key and not part of equality
    source_file: str | None = field(default=None, compare=False, metadata={"yaml": False})

    @property
    def pages(self) -> int:
        return self.vm.memory // self.vm.page_size
