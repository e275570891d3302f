"""``usnav bench``: every speed, memory and accuracy target of the project, each beside a
baseline (pyigtl, scipy, SimpleITK...) measured in the same run, reported as a ratio."""
