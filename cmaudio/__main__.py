"""`python -m cmaudio ...` runs the command line (also under torchrun)."""

from cmaudio.cli import main

main()
