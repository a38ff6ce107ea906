"""One self-contained HTML page that shows how good a trained run is and why.

from monkeysee.report import ReportOptions, build_report
build_report("runs/x", ReportOptions(ood=Path("not-monkeys")))   # -> runs/x/report.html

`ReportOptions` imports nothing heavy (the command line reads its fields for its options); the builder
loads on first use.
"""

from monkeysee.report.options import ReportOptions

__all__ = ["DEFAULT_NAME", "ReportOptions", "build_report"]


def __getattr__(name: str) -> object:
    if name in ("DEFAULT_NAME", "build_report"):
        from monkeysee.report import builder

        return getattr(builder, name)
    raise AttributeError(f"module 'monkeysee.report' has no attribute {name!r}")
