"""Build llama.cpp's ``llama-server`` and ``llama-batched-bench`` from the pinned llama-cpp-python sdist.

The peer the engine benchmark compares against: the same llama.cpp sources that our
``llama_cpp`` binding is built from (the ``vendor/llama.cpp`` tree inside the
llama-cpp-python sdist), CPU only, built with cmake + ninja. The sdist comes from the
package registry through pip (nothing else is downloaded); the build is cached under
``<cache>/llamacpp-<version>-portable/`` so a second run reuses the binaries.

Usage: ``python benchmarks/llamacpp_build.py [--cache DIR]``; prints the ``bin`` folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "0.3.36"
TARGETS = ("llama-server", "llama-batched-bench")


def default_cache() -> Path:
    """``$LLAMA_GPU_BENCH_CACHE``, else ``~/.cache/llama-gpu-bench``."""
    return Path(os.environ.get("LLAMA_GPU_BENCH_CACHE") or Path.home() / ".cache" / "llama-gpu-bench")


def tool(name: str) -> str:
    """``cmake``/``ninja``: the venv's (``pip install cmake ninja``), else the system's."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: pip install cmake ninja")
    return found


def build(cache: Path | None = None, version: str = VERSION) -> Path:
    """The folder holding the built binaries; builds them once (several minutes on 2 cores)."""
    root = (cache or default_cache()) / f"llamacpp-{version}-portable"
    bin_dir = root / "build" / "bin"
    if all((bin_dir / t).exists() for t in TARGETS):
        return bin_dir
    root.mkdir(parents=True, exist_ok=True)
    source = root / "llama.cpp"
    if not (source / "CMakeLists.txt").exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-binary", "llama-cpp-python", "--no-deps", "-d", tmp,
                 f"llama-cpp-python=={version}"],
                check=True,
            )  # fmt: skip
            archive = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            vendored = next(Path(tmp).glob("llama_cpp_python-*")) / "vendor" / "llama.cpp"
            if source.exists():
                shutil.rmtree(source)
            shutil.copytree(vendored, source)
    build_dir = root / "build"
    configure = [tool("cmake"), "-S", str(source), "-B", str(build_dir), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release"]
    # the same instruction set as the binding (the Makefile's LLAMA_CMAKE_ARGS): a fair comparison, and no AMX,
    # which a CPU may advertise while its hypervisor faults on it (a native build crashed here on its first decode)
    configure += ["-DLLAMA_CURL=OFF", "-DGGML_NATIVE=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DBUILD_SHARED_LIBS=OFF"]
    configure += [f"-DCMAKE_MAKE_PROGRAM={tool('ninja')}"]
    subprocess.run(configure, check=True)
    jobs = str(max(1, (os.cpu_count() or 2)))
    subprocess.run(
        ["nice", "-n", "15", tool("cmake"), "--build", str(build_dir), "-j", jobs, "--target", *TARGETS], check=True
    )
    return bin_dir


def main() -> None:
    """Build (or find) the binaries and print their folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    print(build(args.cache))


if __name__ == "__main__":
    main()
