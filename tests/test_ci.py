""".ci/run states the test command, and README.md quotes it: the two cannot drift apart."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def ci_test_command() -> str:
    found = re.findall(r"^test_cmd='([^']+)'$", (ROOT / ".ci" / "run").read_text(), flags=re.M)
    assert len(found) == 1, "CI's script should set test_cmd='...' exactly once"
    return found[0]


def test_readme_quotes_the_ci_test_command():
    cmd = ci_test_command()
    assert cmd.startswith("pytest ")
    lines = [line.strip() for line in (ROOT / "README.md").read_text().splitlines()]
    assert cmd in lines, f"README.md should give CI's test command on a line of its own: {cmd}"
