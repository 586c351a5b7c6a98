"""Build of the optional C speed-up; all metadata is in pyproject.toml.

``segwal.format._speedups`` is optional: without a C compiler or the Python headers the
build warns and the install goes on with the pure-Python decoder, which is the reference
anyway. Set ``SEGWAL_REQUIRE_SPEEDUPS=1`` to make a failed compile fail the build instead.
"""

import os

from setuptools import Extension, setup

required = os.environ.get("SEGWAL_REQUIRE_SPEEDUPS", "") not in ("", "0")

setup(
    ext_modules=[
        Extension(
            "segwal.format._speedups",
            sources=["src/segwal/format/_speedups.c"],
            optional=not required,
        )
    ]
)
