"""How the project's commands build their parser: named as they are run, so `--help` says `python -m package.module`
(argparse would name the file, `count.py`), which is the one thing every command's parser shares."""

from __future__ import annotations

import argparse


def command_parser(
    module: str,
    description: str | None,
    add_help: bool = True,
    formatter_class: type[argparse.HelpFormatter] = argparse.HelpFormatter,
) -> argparse.ArgumentParser:
    """An `ArgumentParser` for `python -m {module}`."""
    return argparse.ArgumentParser(
        prog=f"python -m {module}", description=description, add_help=add_help, formatter_class=formatter_class
    )
