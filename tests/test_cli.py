import json
import subprocess
import sys

from miaudit.cli import main


def test_list_attacks_json_has_taxonomy(capsys):
    assert main(["list", "attacks", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    kinds = {r["target_kind"] for r in rows}
    assert {"classifier", "llm", "encoder", "text_generator"} <= kinds
    assert all(r["citation"] and r["access"] for r in rows)


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2


def test_closed_stdout_pipe_ends_quietly():
    # the reading end is closed before the CLI (still importing) writes, so its first write fails with EPIPE
    proc = subprocess.Popen([sys.executable, "-m", "miaudit.cli", "list", "attacks"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
