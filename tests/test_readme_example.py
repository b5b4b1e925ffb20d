"""README's Python example samples the shipped U-Net through the public API, as written there."""
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    """The indented code block of README.md that builds a SamplingModel from the shipped weights."""
    blocks, current = [], []
    for line in README.read_text().splitlines() + [""]:
        if line.startswith("    ") or (current and not line.strip()):
            current.append(line)
        elif current:
            blocks.append(textwrap.dedent("\n".join(current)))
            current = []
    found = [b for b in blocks if "SamplingModel.from_unet(" in b]
    assert len(found) == 1, "README.md should hold one Python example of sampling the shipped U-Net"
    return found[0]


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path):
    code = readme_example()
    assert "from_pretrained(" in code and len(code.strip().splitlines()) <= 16
    # one thread: torch's default of every CPU runs it ten times slower on a busy 2-core machine
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "rings.png") as im:
        assert im.format == "PNG" and im.size == (4 * 32 * 3, 2 * 32 * 3)
        assert max(im.convert("L").getextrema()) > 100  # shapes drawn, not a blank sheet
