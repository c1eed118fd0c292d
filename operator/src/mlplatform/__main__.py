"""`python -m mlplatform`: the `mlplatform` command (the operator image's entry point)."""

from mlplatform.cli import main

main()
