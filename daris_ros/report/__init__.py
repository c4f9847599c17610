"""Reports of daris_ros runs, read from output bags (rosbags + numpy + matplotlib; no rclpy).

Modules:

- ``extract``  read an output bag into plain records (results per task, stats snapshots, diagnostics,
  recorded camera headers, replay metadata);
- ``metrics``  per task / per priority figures and the frame-accounting checks;
- ``plots``    PNG figures: MRET vs execution time (paper Figure 9), stage timeline, response CDF;
- ``tables``   markdown / HTML tables and NaN-free JSON;
- ``render``   ``report.md``, ``report.html``, ``report.json`` + figures for one run;
- ``compare``  ``compare.md``, ``compare.html``, ``compare.json`` + figures for two runs.
"""

from __future__ import annotations

from .compare import ComparisonFiles, comparison_rows, write_comparison
from .extract import ResultRecord, RunData, StatsSnapshot, TaskSnapshot, read_run
from .metrics import PriorityFigures, RunFigures, TaskFigures, compute
from .render import ReportFiles, report_bag, write_report

__all__ = [
    "ComparisonFiles",
    "PriorityFigures",
    "ReportFiles",
    "ResultRecord",
    "RunData",
    "RunFigures",
    "StatsSnapshot",
    "TaskFigures",
    "TaskSnapshot",
    "comparison_rows",
    "compute",
    "read_run",
    "report_bag",
    "write_comparison",
    "write_report",
]
