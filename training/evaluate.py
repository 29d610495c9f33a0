"""`python -m training.evaluate`, as documented before the offline evaluation became its own package: the same
command as `python -m evaluation.evaluate` (see `evaluation`), kept so that existing scripts and notes still work."""

from evaluation.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
