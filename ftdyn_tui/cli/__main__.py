"""`python -m ftdyn_tui.cli …`: how torchrun (and `ftdyn run --nproc-per-node`) starts each process."""

from ftdyn_tui.cli import main

main()
