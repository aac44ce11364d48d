"""The command line's own errors: one line on stderr, exit code 2."""

from __future__ import annotations

import argparse


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class _ParseError(CLIError):
    """A command-line parsing error, reported with the (sub)parser's ``prog``."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one-line exceptions (printed by :func:`main`), not exits."""

    def error(self, message: str):  # argparse's hook for every parsing error
        raise _ParseError(self.prog, message)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
