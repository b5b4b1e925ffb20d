"""Every mistake a user can make with `fastdiff sample` ends, before any model loads, in one line
on stderr naming the flag, exit code 2, no traceback and nothing written. Each case runs through
cli.main in this process, and as the command in a process of its own (slow: about 4 s of CPU each,
most of it importing torch)."""
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from cli_run import fastdiff
from fastdiff import cli

# (name, arguments, what the one line must contain); "{tmp}" is a folder of fixtures.
CASES = [
    ("huge seed", ["--seed", "99999999999999999999"], "--seed 99999999999999999999: expected an integer from 0"),
    ("negative seed", ["--seed", "-1"], "--seed -1"),
    ("unwritable out", ["--out", "/proc/fastdiff.png"], "--out /proc/fastdiff.png: cannot write"),
    ("out is a folder", ["--out", "{tmp}"], "is a folder"),
    ("out in a missing folder", ["--out", "{tmp}/no/such/grid.png"], "does not exist"),
    ("unknown image format", ["--out", "grid.gif"], "--out grid.gif: expected a file name ending in .png"),
    ("negative steps", ["--steps", "-3"], "--steps -3: expected an integer from 1 to 1000"),
    ("zero steps", ["--steps", "0"], "--steps 0: expected an integer from 1 to 1000"),
    ("too many steps", ["--steps", "5000"], "--steps 5000"),
    ("steps not a number", ["--steps", "x"], "argument --steps: invalid int value"),
    ("too many steps for the default sampler", ["--steps", "1000"], "--steps 1000: too many for the dpmpp_2m sampler"),
    ("too many lcm steps", ["--steps", "60", "--sampler", "lcm"], "--steps 60: too many for the lcm sampler"),
    ("nan guidance", ["--cfg", "nan"], "--cfg nan: expected a finite number"),
    ("negative guidance", ["--cfg", "-3"], "--cfg -3.0"),
    ("zero images", ["--n", "0"], "--n 0"),
    ("zero scale", ["--scale", "0"], "--scale 0"),
    ("zero threads", ["--threads", "0"], "--threads 0"),
    ("bad device", ["--device", "tpu"], "--device tpu: expected cpu, cuda or cuda:N"),
    ("flow sampler", ["--sampler", "flow_euler"], "--sampler flow_euler: a flow-matching sampler"),
    ("unknown sampler", ["--sampler", "plms"], "--sampler plms: unknown; use one of ddpm"),
    ("unknown backend", ["--backend", "metal"], "argument --backend: invalid choice"),
    ("dit without prompt", ["--model", "dit"], "--model dit: the built-in dit needs a prompt"),
    ("dit prompt without a shape", ["--model", "dit", "a red dog"], "needs a colour"),
    ("dit class out of range", ["--model", "dit", "--class-label", "207"], "--class-label 207: the built-in dit has "
                                                                           "classes 0 to 53"),
    ("dit prompt and class", ["--model", "dit", "a red circle", "--class-label", "1"], "not both"),
    ("class label for the unet", ["--class-label", "3"], "--class-label: the built-in unet takes prompts"),
    ("missing model", ["--model", "{tmp}/nothing/here"],
     "not a built-in model (unet, dit, unet-lcm) and no such file or folder"),
    ("random safetensors", ["--model", "{tmp}/random.safetensors"], "tried it as a checkpoint file"),
    ("random bin", ["--model", "{tmp}/random.bin"], "is not a checkpoint"),
    ("vae folder", ["--model", "{tmp}/vae-folder"], "holds a VAE, not a diffusion model"),
    ("unet folder", ["--model", "{tmp}/unet-folder"], "holds a text-conditioned U-Net"),
    ("dit folder without vae", ["--model", "{tmp}/dit-folder"], "no VAE to decode its latents"),
    ("empty folder", ["--model", "{tmp}/empty"], "neither a diffusers folder"),
    ("trained folder missing its vae", ["--model", "{tmp}/trained"], "lacks vae.safetensors"),
]
if not torch.cuda.is_available():
    CASES += [("cuda without a GPU", ["--device", "cuda"], "--device cuda: no CUDA GPU is available"),
              ("triton on the CPU", ["--backend", "triton", "--device", "cpu"], "--backend triton: the triton kernels "
                                                                                 "run on CUDA GPUs"),
              ("cuda on the CPU", ["--backend", "cuda"], "--backend cuda: the cuda kernels run on CUDA GPUs")]


def _fixtures(tmp):
    (tmp / "random.safetensors").write_bytes(b"not a checkpoint " * 64)
    (tmp / "random.bin").write_bytes(b"not a checkpoint " * 64)
    for name, config in (("vae-folder", {"_class_name": "AutoencoderKL"}),
                         ("unet-folder", {"_class_name": "UNet2DConditionModel"}),
                         ("dit-folder", {"_class_name": "DiTTransformer2DModel", "in_channels": 4})):
        (tmp / name).mkdir()
        (tmp / name / "config.json").write_text(json.dumps(config))
    (tmp / "empty").mkdir()
    (tmp / "trained").mkdir()
    (tmp / "trained" / "dit.safetensors").write_bytes(b"")


FIXTURES = sorted(["random.safetensors", "random.bin", "vae-folder", "vae-folder/config.json", "unet-folder",
                   "unet-folder/config.json", "dit-folder", "dit-folder/config.json", "empty", "trained",
                   "trained/dit.safetensors"])


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def _args(args, tmp):
    return ["sample", *[a.replace("{tmp}", str(tmp)) for a in args], "--quiet"]


def _check(result, says):
    code, out, err, files = result
    assert code == 2, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastdiff sample: "), err
    assert says in lines[0], lines[0]
    assert out == "" and files == [], (out, files)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fixtures")
    _fixtures(tmp)
    yield tmp
    assert _files(tmp) == FIXTURES  # no case wrote into the folders it was pointed at


@pytest.mark.parametrize("name, args, says", CASES, ids=[c[0] for c in CASES])
def test_in_process(fixtures, tmp_path, monkeypatch, capsys, name, args, says):
    monkeypatch.chdir(tmp_path)
    code = cli.main(_args(args, fixtures))
    out, err = capsys.readouterr()
    _check((code, out, err, _files(tmp_path)), says)


@pytest.fixture(scope="module")
def processes(fixtures, tmp_path_factory):
    """{case name: (exit code, stdout, stderr, files in its fresh working folder afterwards)}, the
    cases run as processes two at a time."""
    def run(case):
        cwd = tmp_path_factory.mktemp("cwd")
        return case[0], (*fastdiff(*_args(case[1], fixtures), cwd=cwd), _files(cwd))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, CASES))


@pytest.mark.slow
@pytest.mark.parametrize("name, args, says", CASES, ids=[c[0] for c in CASES])
def test_as_a_process(processes, name, args, says):
    _check(processes[name], says)


def test_a_mistake_as_a_process(tmp_path):
    """The one case of the table that runs as a process in the fast tests."""
    code, out, err = fastdiff("sample", "--steps", "-3", cwd=tmp_path)
    assert (code, out, err) == (2, "", "fastdiff sample: --steps -3: expected an integer from 1 to 1000\n")
    assert _files(tmp_path) == []


@pytest.mark.slow
def test_debug_shows_the_traceback(tmp_path):
    code, _, err = fastdiff("sample", "--steps", "0", "--debug", cwd=tmp_path)
    assert code != 0 and "Traceback" in err and "UsageError: --steps 0" in err
    code, _, err = fastdiff("sample", "--steps", "0", cwd=tmp_path, env={"FASTDIFF_DEBUG": "1"})
    assert code != 0 and "Traceback" in err
