"""The install descriptions agree: environment.yml names every package pyproject.toml asks for
and takes their versions from constraints.txt; constraints-cu12.txt is constraints.txt with only
its CUDA 13 stack swapped for CUDA 12 builds of the same releases."""

import re
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parent.parent
EXTRAS_IN_CONDA = ("test", "plots", "dali", "codec", "tensorboard")  # ffcv: `-e .[ffcv]`, built from source
# The names that differ between the CUDA 13 and CUDA 12 installs (torch's CUDA libraries, DALI's).
CUDA_STACK = re.compile(r"^(cuda-(bindings|pathfinder|toolkit)|nvidia-.*)$")
CUDA_BUILDS = ("torch", "torchvision", "torchcodec")  # the same release, another CUDA build


def name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pins(path: Path) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return {name(line): line.split("==", 1)[1] for line in lines if "==" in line}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def conda_pip_section() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))


def test_environment_names_every_dependency_with_the_pinned_versions():
    project = pyproject()
    wanted = {name(r) for r in project["dependencies"]}
    wanted |= {name(r) for extra in EXTRAS_IN_CONDA for r in project["optional-dependencies"][extra]}
    section = conda_pip_section()
    listed = {name(r) for r in section if not r.startswith("-")}
    assert wanted <= listed, f"environment.yml lacks {sorted(wanted - listed)}"
    assert "-c constraints.txt" in section, "the pip section takes its versions from constraints.txt"
    assert listed <= set(pins(ROOT / "constraints.txt")), "every package it names is pinned"
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"], "the pytorch channel ends at 2.5; conda-forge only"


def test_cuda12_constraints_swap_only_the_cuda_stack():
    cu13, cu12 = pins(ROOT / "constraints.txt"), pins(ROOT / "constraints-cu12.txt")
    shared = {k: v for k, v in cu13.items() if not CUDA_STACK.match(k) and k not in CUDA_BUILDS}
    assert {k: cu12.get(k) for k in shared} == shared, "every other pin as in constraints.txt"
    for package in CUDA_BUILDS:
        assert cu12[package] == f"{cu13[package].split('+')[0]}+cu128", package
    assert cu12["nvidia-dali-cuda120"] == cu13["nvidia-dali-cuda130"]
    assert not [k for k in cu12 if k.endswith("-cu13") or "cuda130" in k or k.startswith("cuda-")]
    extras = pyproject()["optional-dependencies"]
    assert [r.replace("cuda120", "cuda130") for r in extras["dali-cu12"]] == extras["dali"]
