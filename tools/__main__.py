"""`python -m tools`: the `hrp-cutover` CLI where the console script is not on PATH."""

from tools.cli import main

main()
