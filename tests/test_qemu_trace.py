"""The switchover read from QEMU's trace (sim/validation/qemu_trace.py), on a real QEMU 7.2 log:
two QEMUs (TCG, loopback) migrating qemu-converging-default, its lines trimmed to the events
the parser reads (tests/data/qemu-trace/)."""

from pathlib import Path

import pytest

from sim.validation import qemu_trace

DATA = Path(__file__).parent / "data" / "qemu-trace"


def _logs() -> tuple[str, str]:
    return (DATA / "source.log").read_text(), (DATA / "destination.log").read_text()


def test_phases_of_a_real_switchover() -> None:
    p = qemu_trace.parse(*_logs())
    assert p is not None
    # the pending bytes after the sync that decided the switchover: 32325632 B
    assert p.final_pages == 32325632 // 4096 == 7892
    # finish-migrate at .952554, RAM section .952834-.969152, last device section .970292,
    # completed .970407 (source); the destination's last RAM load .973967
    assert p.stop_ms == pytest.approx(0.280, abs=1e-3)
    assert p.ram_source_ms == pytest.approx(16.318, abs=1e-3)
    assert p.ram_destination_ms == pytest.approx(21.133, abs=1e-3)
    assert p.device_ms == pytest.approx(1.140, abs=1e-3)
    assert p.tail_ms == pytest.approx(0.115, abs=1e-3)
    assert p.downtime_ms == pytest.approx(17.853, abs=1e-3)
    assert p.stop_ms + p.ram_source_ms + p.device_ms + p.tail_ms == pytest.approx(p.downtime_ms)
    assert p.us_per_page_source == pytest.approx(16.318 / 7892 * 1000, rel=1e-4)


def test_no_switchover_no_phases() -> None:
    source, destination = _logs()
    # cut before the stop (a cancelled run), or no trace at all (a build without the backend)
    cut = "\n".join(line for line in source.splitlines() if "finish-migrate" not in line)
    assert qemu_trace.parse(cut, destination) is None
    assert qemu_trace.parse("", "") is None
    # a post-copy switch also stops the source (finish-migrate) but sends its RAM on demand
    postcopy = source.replace(
        "16333@1796596683.970407:migrate_set_state new state completed",
        "16333@1796596683.952600:migrate_set_state new state postcopy-active\n"
        "16333@1796596683.970407:migrate_set_state new state completed")
    assert "postcopy-active" in postcopy
    assert qemu_trace.parse(postcopy, destination) is None


def test_qemu_messages_are_not_trace_lines() -> None:
    lines = (DATA / "source.log").read_text().splitlines()
    assert qemu_trace.is_trace_line(lines[0])
    assert not qemu_trace.is_trace_line(lines[-1])  # QEMU's own message, dated by -msg
    args = qemu_trace.trace_args()
    assert args[:2] == ["-msg", "timestamp=on"]
    assert all(f"enable={event}" in args for event in qemu_trace.EVENTS)


def test_model_row() -> None:
    row = qemu_trace.model_row({"downtime_s": 0.0122}, 8020, 0.00166)
    assert row["model_us_per_page"] == pytest.approx((12.2 - 1.66) / 8020 * 1000)
    assert row["model_final_pages"] == 8020


def test_the_phases_figure(tmp_path):
    import csv

    p = qemu_trace.parse(*_logs())
    row = {"run": "qemu-converging-default", **p.row(),
           **qemu_trace.model_row({"downtime_s": 0.0122}, 8020, 0.00166)}
    path = tmp_path / "qemu-phases.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    figure = qemu_trace.draw(path, tmp_path / "qemu-phases.png")
    assert figure is not None and figure.read_bytes()[:4] == b"\x89PNG"
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(row) + "\n")
    assert qemu_trace.draw(empty, tmp_path / "none.png") is None



def test_a_host_that_hands_memory_back_is_named(monkeypatch, tmp_path):
    """Free page reporting makes real QEMU runs spread (docs/validation.md): the harness says
    so when the host has it, and says nothing when it does not."""
    from sim.validation import qemu

    monkeypatch.setattr(qemu, "PAGE_REPORTING", tmp_path / "page_reporting")
    assert qemu.memory_note() is None
    (tmp_path / "page_reporting").mkdir()
    note = qemu.memory_note()
    assert note is not None and "free page reporting" in note


def test_a_host_under_bbr_is_named(monkeypatch, tmp_path):
    """Under BBR a large burst after a slow paced phase is slower than the model's
    (docs/validation.md): the harness says so under BBR, and nothing under another algorithm
    or when the setting cannot be read."""
    from sim.validation import qemu

    setting = tmp_path / "tcp_congestion_control"
    monkeypatch.setattr(qemu, "CONGESTION_CONTROL", setting)
    assert qemu.congestion_note() is None
    setting.write_text("cubic\n")
    assert qemu.congestion_note() is None
    setting.write_text("bbr\n")
    note = qemu.congestion_note()
    assert note is not None and "bbr" in note and "cubic" in note
