"""Reports of a run: figures, Markdown, and the run directory (write and read back)."""

from miaudit.report.markdown import render_report, summary_table
from miaudit.report.plots import plot_roc, plot_score_histograms
from miaudit.report.rundir import RUN_VERSION, Run, load_run, write_run_dir

__all__ = ["RUN_VERSION", "Run", "load_run", "plot_roc", "plot_score_histograms", "render_report",
           "summary_table", "write_run_dir"]
