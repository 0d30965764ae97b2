"""Installable distribution of the toolkit: import packages ``mtl`` (base) and ``meta``."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
README = (HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else ""

setup(
    name="mtlmeta",
    version="0.1.0",
    description=(
        "Learning from related tasks: multi-task learning, transfer, distillation, "
        "domain adaptation, self-training and meta-learning on one backbone registry."
    ),
    long_description=README,
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["mtl", "mtl.*", "meta", "meta.*"]),
    install_requires=[
        "torch>=2.1",
        "numpy>=1.23",
        "matplotlib>=3.6",
        "tqdm>=4.60",
        "pillow>=9.0",
    ],
    extras_require={
        "test": [
            "pytest>=7", "hypothesis>=6", "higher==0.2.1", "ruff>=0.4", "mkdocs>=1.6", "mkdocstrings[python]>=0.26",
        ],
        "docs": ["mkdocs>=1.6", "mkdocstrings[python]>=0.26"],
        "peers": ["higher==0.2.1"],
        "vision": ["torchvision"],
    },
    entry_points={
        "console_scripts": ["mtlmeta=mtl.cli:main"],
        "mtlmeta.commands": [
            "fewshot=meta.cli_fewshot:register",
            "selftrain=meta.cli_selftrain:register",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
