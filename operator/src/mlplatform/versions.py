"""Versions the whole platform agrees on, defined once.

Every image's requirements.txt pins MLFLOW_VERSION literally (pip cannot read a variable and a Docker
build context cannot reach this file); tests/unit/test_versions.py fails if any of them pins another.

MLflow 3.17.2: the newest release whose whole dependency set installs from PyPI (3.18.0 needs an
mlflow-skinny 3.18.0 that PyPI does not serve), and later than every fix for the 2026 MLflow advisories
(the newest of them were fixed in 3.16.0).
"""

MLFLOW_VERSION = "3.17.2"
