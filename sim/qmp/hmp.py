"""``human-monitor-command``: the two HMP commands a management stack reads, ``info migrate`` and
``info status``, rendered from the QMP replies (so they can only agree with them). The layout
follows QEMU's long-standing HMP text (``migration/migration-hmp-cmds.c``, before 9.2), in our
own code; lines end with CRLF as HMP's output does. Any other command line answers QEMU's
``unknown command`` text (a reply, not an error, as in QEMU).
"""

from __future__ import annotations

from typing import Any

KIB = 1024


def run(endpoint: Any, command_line: str) -> str:
    words = command_line.split()
    if words[:2] == ["info", "migrate"]:
        return info_migrate(endpoint.query_migrate_capabilities(), endpoint.query_migrate())
    if words[:2] == ["info", "status"]:
        return info_status(endpoint.query_status())
    shown = " ".join(words[:2]) if words[:1] == ["info"] else (words[0] if words else "")
    return f"unknown command: '{shown}'\r\n"


def info_status(status: dict[str, Any]) -> str:
    """``VM status: running``, or ``paused`` with the run state when it is another."""
    if status["running"]:
        return "VM status: running\r\n"
    state = status["status"]
    return "VM status: paused\r\n" if state == "paused" else f"VM status: paused ({state})\r\n"


def info_migrate(caps: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = ["capabilities: " + " ".join(
        f"{c['capability']}: {'on' if c['state'] else 'off'}" for c in caps)]
    if "status" in info:
        lines.append(f"Migration status: {info['status']}")
    if "total-time" in info:
        lines.append(f"total time: {info['total-time']} ms")
    if "expected-downtime" in info:
        lines.append(f"expected downtime: {info['expected-downtime']} ms")
    if "downtime" in info:
        lines.append(f"downtime: {info['downtime']} ms")
    if "setup-time" in info:
        lines.append(f"setup: {info['setup-time']} ms")
    ram = info.get("ram")
    if ram:
        lines += [
            f"transferred ram: {ram['transferred'] // KIB} kbytes",
            f"throughput: {ram['mbps']:0.2f} mbps",
            f"remaining ram: {ram['remaining'] // KIB} kbytes",
            f"total ram: {ram['total'] // KIB} kbytes",
            f"duplicate: {ram['duplicate']} pages",
            f"normal: {ram['normal']} pages",
            f"normal bytes: {ram['normal-bytes'] // KIB} kbytes",
            f"dirty sync count: {ram['dirty-sync-count']}",
            f"page size: {ram['page-size'] // KIB} kbytes",
            f"multifd bytes: {ram['multifd-bytes'] // KIB} kbytes",
            f"pages-per-second: {ram['pages-per-second']}",
        ]
        if ram["dirty-pages-rate"]:
            lines.append(f"dirty pages rate: {ram['dirty-pages-rate']} pages")
    cache = info.get("xbzrle-cache")
    if cache:
        lines += [f"cache size: {cache['cache-size']} bytes",
                  f"xbzrle transferred: {cache['bytes'] // KIB} kbytes",
                  f"xbzrle pages: {cache['pages']} pages",
                  f"xbzrle cache miss: {cache['cache-miss']} pages",
                  f"xbzrle cache miss rate: {cache['cache-miss-rate']:0.2f}",
                  f"xbzrle encoding rate: {cache['encoding-rate']:0.2f}",
                  f"xbzrle overflow: {cache['overflow']}"]
    if "cpu-throttle-percentage" in info:
        lines.append(f"cpu throttle percentage: {info['cpu-throttle-percentage']}")
    if "error-desc" in info:
        lines.append(f"error description: {info['error-desc']}")
    return "".join(line + "\r\n" for line in lines)
