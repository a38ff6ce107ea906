"""One self-contained HTML page that shows how good a trained run is and why.

from monkeysee.report import ReportOptions, build_report
build_report("runs/x", ReportOptions(ood=Path("not-monkeys")))   # -> runs/x/report.html
"""

from monkeysee.report.builder import DEFAULT_NAME, build_report
from monkeysee.report.context import ReportOptions

__all__ = ["DEFAULT_NAME", "ReportOptions", "build_report"]
