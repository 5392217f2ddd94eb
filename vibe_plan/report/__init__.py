"""`vibe report`: one self-contained HTML page (PNG figures beside it) with the whole picture:
GPU curves, expert load, per-GPU time per layer of each placement, the evaluate table and, where
given, the serving simulation. Needs the `report` extra (matplotlib), imported only here."""

from vibe_plan.report.write import Report, write_report

__all__ = ["Report", "write_report"]
