"""Counts checks and prints failures as they happen, so a CI log reads top to bottom."""

from __future__ import annotations

import sys
from typing import TextIO


class Report:
    """One line per failure (and per pass with `verbose`), then `N passed, M failed`."""

    def __init__(self, out: TextIO = sys.stdout, verbose: bool = False) -> None:
        self.out = out
        self.verbose = verbose
        self.passed = 0
        self.failed = 0
        self.failures: list[str] = []

    def check(self, ok: bool, subject: str, problem: str = "") -> bool:
        """Records one check; `problem` says what is wrong when `ok` is false."""
        if ok:
            self.passed += 1
            if self.verbose:
                print(f"ok    {subject}", file=self.out)
        else:
            self.failed += 1
            line = f"{subject}: {problem}" if problem else subject
            self.failures.append(line)
            print(f"FAIL  {line}", file=self.out)
        return ok

    def note(self, message: str) -> None:
        """Something worth a look that is not a failure."""
        print(f"note  {message}", file=self.out)

    def summary(self) -> str:
        return f"{self.passed} passed, {self.failed} failed"
