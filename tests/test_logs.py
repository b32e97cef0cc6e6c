"""Run logs go to log.txt in the run directory; -q silences progress bars and info on the console."""

import io
import logging

from miaudit.utils.logs import progress, progress_enabled, run_log


def test_run_log_writes_info_to_file_and_quiet_silences_console(tmp_path):
    console = io.StringIO()
    handler = logging.StreamHandler(console)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.WARNING)  # as the CLI does with -q
    try:
        with run_log(tmp_path, quiet=True) as path:
            logging.getLogger("miaudit.runs").info("training target model")
            logging.getLogger("miaudit.runs").warning("few non-members")
            assert not progress_enabled()
            bar_out = io.StringIO()
            for _ in progress(range(3), desc="models", file=bar_out):
                pass
            assert bar_out.getvalue() == ""
        assert progress_enabled()
        logging.getLogger("miaudit.runs").info("after the run")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    text = path.read_text()
    assert path.name == "log.txt" and "training target model" in text and "few non-members" in text
    assert "after the run" not in text
    assert "training target model" not in console.getvalue() and "few non-members" in console.getvalue()


def test_progress_shows_rate_and_eta_when_enabled():
    out = io.StringIO()
    for _ in progress(range(5), desc="scoring", file=out, mininterval=0):
        pass
    assert "scoring" in out.getvalue() and "it/s" in out.getvalue() and "5/5" in out.getvalue()
