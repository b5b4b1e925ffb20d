"""The built-in models say which prompt words they will not follow, and the built-in DiT takes
class labels as well as prompts."""
import pytest
import torch

from fastdiff import builtin, cli
from fastdiff.builtin import prompts


def test_problems_of_a_prompt():
    assert prompts.problems("unet", "a small red circle at the top left") == []
    found = prompts.problems("unet", "a red dog")
    assert len(found) == 1 and found[0].startswith("unknown words dog (the models know: ")
    long = "a red circle " + " ".join(["at the top"] * 4)
    assert any(p.startswith("words past the 12th dropped: at the top") for p in prompts.problems("unet", long))
    assert any("several colours (red blue)" in p for p in prompts.problems("unet", "a red and blue circle"))
    assert prompts.problems("dit", "a small red circle at the top left") == [
        "the DiT ignores size and position: small at the top left"]
    assert prompts.missing_class("a red circle") is None and "needs a colour" in prompts.missing_class("a circle")


def test_class_names_follow_the_labels():
    names = prompts.class_names()
    assert len(names) == 54 and names[0] == "red circle" and names[34] == "blue ring"
    assert [builtin.label(f"a {n}") for n in names] == list(range(54))
    with pytest.raises(ValueError, match="class labels are 0 to 53"):
        builtin.label(54)


def test_builtin_dit_samples_class_labels_as_their_prompts():
    model = builtin.sampling_model("dit")
    by_label = model.generate([4, 34], steps=2, seed=3)
    assert torch.equal(by_label, model.generate(["a red ring", "a blue ring"], steps=2, seed=3))


def test_sample_warns_in_one_line_and_samples(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sample", "--model", "dit", "a small red circle at the top", "--n", "1", "--steps", "2",
                     "--out", "dit.png", "--quiet"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["fastdiff sample: warning: prompt 'a small red circle at the top': the DiT ignores size and "
                   "position: small at the top"]
    assert (tmp_path / "dit.png").stat().st_size > 0
