"""``python -m stemtomo`` (also what ``torchrun -m stemtomo`` runs)."""

from stemtomo.cli.app import main

main()
