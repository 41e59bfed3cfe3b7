"""``python -m vaekit`` (also what ``torchrun -m vaekit`` runs)."""

from vaekit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
