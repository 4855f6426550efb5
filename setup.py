"""Builds the one compiled module, pipeline/_cbook.pyx (the order book's hot path), with Cython.

Everything else is in pyproject.toml.  The extension is optional: without a C compiler (or
when the build fails) the install goes on and pipeline/book.py's pure-Python ViewBook runs
instead (``pipeline status`` and ``pipeline bench`` say which one).  The sha256 of the
source is compiled in, so pipeline/book.py can refuse a build older than its source.
"""

import hashlib
from pathlib import Path

from setuptools import Extension, setup

SOURCE = "pipeline/_cbook.pyx"


def extensions() -> list:
    try:
        from Cython.Build import cythonize
    except ImportError:  # no Cython in the build environment: pure Python only
        return []
    digest = hashlib.sha256(Path(__file__).with_name("pipeline").joinpath("_cbook.pyx").read_bytes()).hexdigest()
    ext = Extension("pipeline._cbook", [SOURCE], optional=True,
                    define_macros=[("L2P_SOURCE_SHA256", f'"{digest}"')],
                    extra_compile_args=["-O2"])
    return cythonize([ext], language_level=3, quiet=True)


setup(ext_modules=extensions())
