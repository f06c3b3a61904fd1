"""keras-unet3plus: UNet 3+ (Huang et al., ICASSP 2020) for TensorFlow/Keras, from paper to deployment."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

EXTRAS = {
    # ONNX export and ONNX Runtime inference.
    "onnx": ["tf2onnx>=1.17", "onnx>=1.16", "onnxruntime>=1.20", "onnxconverter-common>=1.14"],
    # LiteRT (TFLite) interpreter; the converter ships with TensorFlow itself.
    "litert": ["ai-edge-litert>=2.0"],
    # TensorRT engines from the ONNX graph (NVIDIA GPU machines only).
    "tensorrt": [
        "tensorrt>=10.0",
        "cuda-python>=12.0",
        "tf2onnx>=1.17",
        "onnx>=1.16",
        "onnxruntime>=1.20",
        "onnxconverter-common>=1.14",
    ],
    # DICOM CT series input and DICOM SEG output (pydicom reads, highdicom writes SEG; 0.27 is the
    # first with CIELabColor.from_rgb, tested with 0.27.0 and 0.28.2). Compressed pixel data as PACS
    # send it: python-gdcm (GDCM, BSD; wheel Apache-2.0) decodes JPEG Lossless (SV1 .70 and .57),
    # JPEG-LS, JPEG 2000 and JPEG baseline; highdicom brings pillow (MIT-CMU: JPEG baseline, JPEG 2000)
    # and pyjpegls (MIT: JPEG-LS); pydicom reads RLE and deflate itself. pydicom's other JPEG plugin,
    # pylibjpeg-libjpeg, is GPL-3: it stays out of every extra.
    "dicom": ["pydicom>=3.0", "highdicom>=0.27", "python-gdcm>=3.0.10"],
    # NRRD and MetaImage scans (.nrrd, .nhdr, .mha, .mhd) as training cases, evaluation targets and
    # predict inputs, read as nnU-Net reads them: SimpleITK (Apache-2.0); tested with 2.5.
    "itk": ["SimpleITK>=2.3"],
    # Peer used only by the benchmarks (keras-unet-collection's unet_3plus_2d).
    "bench": ["keras-unet-collection==0.1.13"],
    # The PyTorch backend (KERAS_BACKEND=torch; tests/test_backends.py runs its checks where it is
    # installed). Tested with the CPU wheel of 2.13.0; PyPI's default Linux wheel bundles CUDA
    # (gigabytes), which is why it stays out of [dev] and CI: on a CPU machine install PyTorch's
    # CPU-only build first, then this extra.
    "torch": ["torch>=2.11"],
}
EXTRAS["dev"] = sorted(
    set(
        EXTRAS["onnx"]
        + EXTRAS["litert"]
        + EXTRAS["dicom"]
        + EXTRAS["itk"]
        + ["pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.5"]
        # the lint and type check the test suite runs (ruff.toml, mypy.ini; tests/test_lint.py)
        + ["ruff>=0.6", "mypy>=1.10"]
        # the JAX backend: CI runs the backend-independent tests under it too (tests/test_backends.py)
        + ["jax[cpu]>=0.4.36"]
    )
)
EXTRAS["all"] = sorted(set(EXTRAS["dev"] + EXTRAS["bench"]))

setup(
    name="keras-unet3plus",
    version=re.search(r'__version__ = "([^"]+)"', (HERE / "keras_unet3plus" / "_version.py").read_text()).group(1),
    description="UNet 3+ for Keras 3 / TensorFlow: full-scale skips, deep supervision, CGM, "
    "hybrid loss, NIfTI pipeline, ONNX/LiteRT/TensorRT export.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["keras_unet3plus", "keras_unet3plus.*"]),
    package_data={"keras_unet3plus.export": ["tensorrt_onnx_ops.txt"]},
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<3.16",
        "numpy>=1.26",
        "scipy>=1.11",
        "nibabel>=5.2",
        "matplotlib>=3.8",
        "pyyaml>=6.0",
        "tqdm>=4.66",
    ],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["unet3plus=keras_unet3plus.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
