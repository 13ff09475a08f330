"""test stage: read JUnit XML reports (Surefire, Gradle, pytest --junitxml) into counts and the
names of the failing tests, for the run summary and the notification."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_FAILED_NAMES = 20  # a notification names the first few; the log has the rest


@dataclass
class TestReport:
    """Totals over every JUnit file read."""

    __test__ = False  # not a pytest test class, despite the name

    files: int = 0
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    failed_names: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def passed(self) -> int:
        """Tests that neither failed, errored nor were skipped."""
        return max(0, self.tests - self.failures - self.errors - self.skipped)

    @property
    def ok(self) -> bool:
        """True when no test failed or errored."""
        return self.failures == 0 and self.errors == 0

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts for the job record."""
        return {
            "files": self.files,
            "tests": self.tests,
            "passed": self.passed,
            "failures": self.failures,
            "errors": self.errors,
            "skipped": self.skipped,
            "failed_tests": self.failed_names[:MAX_FAILED_NAMES],
            "unreadable": self.unreadable,
        }

    def describe(self) -> str:
        """One line: '12 tests, 1 failed (test_login), 0 skipped'."""
        bad = self.failures + self.errors
        text = f"{self.tests} tests, {self.passed} passed, {bad} failed, {self.skipped} skipped"
        if self.failed_names:
            names = ", ".join(self.failed_names[:5])
            more = f" and {len(self.failed_names) - 5} more" if len(self.failed_names) > 5 else ""
            text += f" (failing: {names}{more})"
        return text


def find_reports(root: Path, patterns: Sequence[str]) -> list[Path]:
    """JUnit files under `root` matching any glob in `patterns`, each once, sorted."""
    found: set[Path] = set()
    for pattern in patterns:
        found.update(path for path in root.glob(pattern) if path.is_file())
    return sorted(found)


def read_reports(paths: Iterable[Path]) -> TestReport:
    """Add up the JUnit XML files in `paths`; a file that does not parse is listed, not fatal."""
    report = TestReport()
    for path in paths:
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError):
            report.unreadable.append(path.name)
            continue
        report.files += 1
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        for suite in suites:
            _add_suite(report, suite)
    return report


def _add_suite(report: TestReport, suite: ET.Element) -> None:
    # Count test cases rather than trusting the suite's attributes: pytest and Surefire agree
    # on <testcase>, not always on the totals (nested suites would count twice).
    for case in suite.findall("testcase"):
        report.tests += 1
        name = _case_name(case)
        if case.find("failure") is not None:
            report.failures += 1
            report.failed_names.append(name)
        elif case.find("error") is not None:
            report.errors += 1
            report.failed_names.append(name)
        elif case.find("skipped") is not None:
            report.skipped += 1


def _case_name(case: ET.Element) -> str:
    name = case.get("name", "?")
    owner = case.get("classname")
    return f"{owner}.{name}" if owner else name
