"""Build script. Metadata lives in pyproject.toml; this file only adds the optional ahead-of-time
build of the native extensions (see fastalign/backends/_jit.py for the just-in-time build)."""
from setuptools import setup

setup()
