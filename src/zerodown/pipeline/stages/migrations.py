"""migrations stage: check Flyway migrations (`V<n>__<desc>.sql`) with sqlglot and refuse the
changes an old and a new release cannot both live with (seed 000, section 6.5): DROP TABLE,
DROP COLUMN, a column type change, adding NOT NULL (a new column without a default, or on an
existing column), RENAME. A migration marked as the contract step of an expand/contract change
(a `-- zerodown:contract` comment, or `__contract` in its file name) may do them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # sqlglot loads only when a migrations job runs (it is slow to import)
    from sqlglot import exp

CONTRACT_MARK = re.compile(r"--\s*zerodown:contract\b", re.IGNORECASE)
FLYWAY_NAME = re.compile(r"^(V\d+(?:[._]\d+)*|R)__\w[\w.-]*\.sql$")
_FALLBACK_DIALECTS = ("mysql", "postgres")
_RENAME_TABLE = re.compile(r"^\s*RENAME\s+TABLE\b", re.IGNORECASE)


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a file and the line it starts on."""

    line: int
    text: str


@dataclass(frozen=True)
class Violation:
    """A destructive statement: where it is, what it does, and whether the file may do it."""

    file: str
    line: int
    statement: str
    kind: str  # drop_table | drop_column | type_change | not_null | rename
    allowed: bool  # the file is marked as a contract step

    def describe(self) -> str:
        """'V3__drop_email.sql:4: drop_column: ALTER TABLE users DROP COLUMN email'."""
        return f"{self.file}:{self.line}: {self.kind}: {self.statement}"


@dataclass
class MigrationReport:
    """Every file checked, and what was found."""

    files: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def refused(self) -> list[Violation]:
        """Destructive statements in files not marked as a contract step."""
        return [v for v in self.violations if not v.allowed]

    def summary(self) -> dict[str, object]:
        """JSON-ready for the job record."""
        return {
            "files": self.files,
            "refused": [v.describe() for v in self.refused],
            "allowed_contract_steps": [v.describe() for v in self.violations if v.allowed],
            "warnings": self.warnings,
        }


def migration_files(folder: Path) -> list[Path]:
    """The .sql files of a migrations folder, in Flyway's version order."""
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.sql"), key=_version_key)


def _version_key(path: Path) -> tuple[int, tuple[int, ...], str]:
    found = re.match(r"^V(\d+(?:[._]\d+)*)__", path.name)
    if not found:
        return (1, (), path.name)  # repeatable and odd names run after versioned ones
    return (0, tuple(int(p) for p in re.split(r"[._]", found.group(1))), path.name)


def check_migrations(files: Sequence[Path], *, dialect: str | None = None) -> MigrationReport:
    """Check each file; the report lists every destructive statement with file and line."""
    report = MigrationReport()
    for path in files:
        report.files.append(path.name)
        if not FLYWAY_NAME.match(path.name):
            report.warnings.append(f"{path.name}: not a Flyway name (V<n>__<description>.sql)")
        text = path.read_text(encoding="utf-8", errors="replace")
        contract = "__contract" in path.name.lower() or bool(CONTRACT_MARK.search(text))
        for statement in split_statements(text):
            for kind in destructive_kinds(statement.text, dialect):
                report.violations.append(
                    Violation(path.name, statement.line, _one_line(statement.text), kind, contract)
                )
    return report


def destructive_kinds(sql: str, dialect: str | None = None) -> list[str]:
    """What is destructive in one statement ([] when it is safe)."""
    if _RENAME_TABLE.match(sql):
        return ["rename"]
    tree = _parse(sql, dialect)
    if tree is None:
        return []
    from sqlglot import exp

    kinds: list[str] = []
    if isinstance(tree, exp.Drop) and str(tree.args.get("kind", "")).upper() == "TABLE":
        kinds.append("drop_table")
    if isinstance(tree, exp.Alter):
        for action in tree.args.get("actions") or []:
            kinds.extend(_alter_action(action))
    return kinds


def _alter_action(action: exp.Expression) -> Iterator[str]:
    from sqlglot import exp

    if isinstance(action, exp.Drop) and str(action.args.get("kind", "")).upper() == "COLUMN":
        yield "drop_column"
    elif isinstance(action, exp.AlterColumn):
        if action.args.get("dtype") is not None:
            yield "type_change"
        if action.args.get("allow_null") is False:
            yield "not_null"
    elif isinstance(action, exp.ModifyColumn):  # MySQL MODIFY / CHANGE COLUMN
        yield "rename" if action.args.get("rename_from") is not None else "type_change"
    elif isinstance(action, exp.RenameColumn | exp.AlterRename):
        yield "rename"
    elif isinstance(action, exp.ColumnDef):  # ADD COLUMN
        constraints = [c.args.get("kind") for c in action.args.get("constraints") or []]
        not_null = any(isinstance(c, exp.NotNullColumnConstraint) for c in constraints)
        default = any(isinstance(c, exp.DefaultColumnConstraint) for c in constraints)
        if not_null and not default:
            yield "not_null"


def _parse(sql: str, dialect: str | None) -> exp.Expr | None:
    # sqlglot falls back to an opaque Command for syntax a dialect lacks (MySQL's MODIFY
    # COLUMN under the generic dialect): try the common dialects before giving up.
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError

    tried = [dialect] if dialect else [None, *_FALLBACK_DIALECTS]
    sqlglot_log = logging.getLogger("sqlglot")
    level = sqlglot_log.level
    sqlglot_log.setLevel(logging.ERROR)  # the fallback warning is noise here
    try:
        for name in tried:
            try:
                tree = sqlglot.parse_one(sql, read=name)
            except ParseError:
                continue
            if not isinstance(tree, exp.Command):
                return tree
    finally:
        sqlglot_log.setLevel(level)
    return None


def split_statements(text: str) -> list[Statement]:
    """Split SQL on `;` outside quotes, comments and $$ bodies; each with its first line."""
    statements: list[Statement] = []
    buf: list[str] = []
    line = 1
    start: int | None = None
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        two = text[i : i + 2]
        if two == "--" or ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if two == "/*":
            end = text.find("*/", i + 2)
            stop = n if end < 0 else end + 2
            line += text.count("\n", i, stop)
            i = stop
            continue
        if ch in "'\"`" or two == "$$":
            close = "$$" if two == "$$" else ch
            end = text.find(close, i + len(close))
            stop = n if end < 0 else end + len(close)
            if start is None:
                start = line
            buf.append(text[i:stop])
            line += text.count("\n", i, stop)
            i = stop
            continue
        if ch == ";":
            if start is not None and "".join(buf).strip():
                statements.append(Statement(start, "".join(buf).strip()))
            buf, start = [], None
            i += 1
            continue
        if ch == "\n":
            line += 1
        elif start is None and not ch.isspace():
            start = line
        buf.append(ch)
        i += 1
    if start is not None and "".join(buf).strip():
        statements.append(Statement(start, "".join(buf).strip()))
    return statements


def _one_line(sql: str) -> str:
    return " ".join(sql.split())[:300]
