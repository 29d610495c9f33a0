"""benchmarks.import_overlap runs both orders in fresh interpreters and reports each run. No timing is asserted."""

from __future__ import annotations

from benchmarks import import_overlap


def test_both_orders_run_and_are_reported(capsys):
    assert import_overlap.main(["--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "in turn:" in out and "overlapped:" in out and "CPU:" in out
