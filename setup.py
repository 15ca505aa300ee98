"""Build fedmm: pure-Python packages plus the pybind11 extension ``fedmm._C`` via CMake.

Set ``FEDMM_NO_EXT=1`` to skip the compiled core (everything then runs on the
numpy/scipy fallbacks of ``fedmm.ops``).
"""
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str, source_dir: Path) -> None:
        super().__init__(name, sources=[])
        self.source_dir = str(source_dir)


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        build_dir = Path(self.build_temp).resolve() / ext.name
        build_dir.mkdir(parents=True, exist_ok=True)
        config = "Debug" if self.debug else "Release"
        cmake_args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={config}",
        ]
        jobs = str(os.cpu_count() or 1)
        subprocess.run(["cmake", ext.source_dir, *cmake_args], cwd=build_dir, check=True)
        subprocess.run(["cmake", "--build", ".", "--config", config, "-j", jobs], cwd=build_dir, check=True)


ext_modules = [] if os.environ.get("FEDMM_NO_EXT") == "1" else [CMakeExtension("fedmm._C", ROOT)]

setup(
    name="fedmm",
    version="0.1.0",
    description="Federated multimodal (image+text) learning with missing modalities",
    python_requires=">=3.11",
    # every package under fedmm/ (found, not listed: a new one cannot be left out of a wheel), plus the
    # two installed from top-level folders
    packages=[*find_packages(include=["fedmm", "fedmm.*"]), "fedmm.kernels", "fedmm.cli"],
    package_data={"fedmm.engines.flower": ["app/pyproject.toml"]},
    package_dir={"fedmm": "fedmm", "fedmm.kernels": "kernels", "fedmm.cli": "cli"},
    ext_modules=ext_modules,
    cmdclass={"build_ext": CMakeBuild},
    install_requires=[
        "torch", "torchvision", "transformers", "tokenizers", "safetensors", "numpy", "scipy",
        "faiss-cpu", "typer", "rich", "pillow", "pydicom", "defusedxml", "matplotlib", "tensorboard", "dp-accounting",
        "triton; platform_system=='Linux'",
    ],
    extras_require={
        "test": ["pytest", "pytest-benchmark", "hypothesis", "lap", "flwr>=1.42,<1.43", "cryptography"],
        "deploy": ["flwr>=1.42,<1.43", "cryptography"],
    },
    entry_points={"console_scripts": ["fedmm=fedmm.cli.app:main"]},
    zip_safe=False,
)
