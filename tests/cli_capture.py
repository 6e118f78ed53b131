"""The CLI run in the test's own process, its output captured by pytest's ``capfd``."""

from __future__ import annotations

from pipeline.cli import main


def run(capfd, *args: str) -> tuple[int, list[str], str, str]:
    """(exit code, the stderr lines that start with 'pipeline:', all stderr, all stdout)."""
    code = main(list(args))
    cap = capfd.readouterr()
    return code, [line for line in cap.err.splitlines() if line.startswith("pipeline:")], cap.err, cap.out


def one_error_line(capfd, *args: str) -> str:
    """The one 'pipeline:' line of a run that must be bad input (exit 2) without a traceback."""
    code, lines, err, _ = run(capfd, *args)
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]
