"""The version of kam, written into every manifest, calibration, history and report (so that a figure
can be traced to the code that made it). Kept equal to `pyproject.toml`'s version by a test."""

__version__ = "0.1.0"
