"""Build of the optional C speed-up; all metadata is in pyproject.toml.

``segwal.format._speedups`` (the frame decoder) and ``segwal.format._encode`` (the
one-record frame encoder of single appends, with ``_appender.c``'s FastAppender and
``_direct.c``'s O_DIRECT block writes) are optional: without a C compiler or the Python
headers the build warns and the install goes on with the pure-Python code, which is the
reference anyway. Set ``SEGWAL_REQUIRE_SPEEDUPS=1`` to make a failed compile fail the build instead.
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
        ),
        Extension(
            "segwal.format._encode",
            sources=[
                "src/segwal/format/_encode.c",
                "src/segwal/format/_appender.c",
                "src/segwal/format/_durable.c",
                "src/segwal/format/_publication.c",
                "src/segwal/format/_direct.c",
            ],
            depends=["src/segwal/format/_durable.h", "src/segwal/format/_direct.h"],
            optional=not required,
        ),
    ]
)
