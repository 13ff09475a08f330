"""Built-in stages: JUnit reading, the scan gate, the migration check, build packing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zerodown.errors import PipelineError
from zerodown.pipeline.stages import build, migrations, scan
from zerodown.pipeline.stages.test import find_reports, read_reports

SUREFIRE = """<?xml version="1.0"?>
<testsuite name="com.shop.LoginTest" tests="3" failures="1" errors="1" skipped="0">
  <testcase classname="com.shop.LoginTest" name="logsIn"/>
  <testcase classname="com.shop.LoginTest" name="rejectsBadPassword">
    <failure message="expected 401">stack</failure>
  </testcase>
  <testcase classname="com.shop.LoginTest" name="locksAccount"><error message="NPE"/></testcase>
</testsuite>"""

PYTEST = """<?xml version="1.0"?>
<testsuites><testsuite name="pytest">
  <testcase classname="tests.test_app" name="test_home"/>
  <testcase classname="tests.test_app" name="test_slow"><skipped/></testcase>
</testsuite></testsuites>"""


def test_junit_reports_give_counts_and_failing_test_names(tmp_path: Path) -> None:
    (tmp_path / "build" / "test-results").mkdir(parents=True)
    (tmp_path / "build" / "test-results" / "TEST-Login.xml").write_text(SUREFIRE)
    (tmp_path / "junit.xml").write_text(PYTEST)
    (tmp_path / "junit-broken.xml").write_text("<testsuite")
    report = read_reports(find_reports(tmp_path, ["**/TEST-*.xml", "junit*.xml"]))
    assert (report.files, report.tests, report.failures, report.errors) == (2, 5, 1, 1)
    assert (report.skipped, report.passed) == (1, 2)
    assert report.failed_names == [
        "com.shop.LoginTest.rejectsBadPassword",
        "com.shop.LoginTest.locksAccount",
    ]
    assert report.unreadable == ["junit-broken.xml"]
    assert not report.ok
    assert "rejectsBadPassword" in report.describe()


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data))
    return path


TRIVY = {
    "SchemaVersion": 2,
    "Results": [
        {
            "Target": "app.jar",
            "Vulnerabilities": [
                {"VulnerabilityID": "CVE-1", "PkgName": "log4j", "Severity": "CRITICAL"},
                {"VulnerabilityID": "CVE-2", "PkgName": "jackson", "Severity": "MEDIUM"},
            ],
        }
    ],
}
PIP_AUDIT = {"dependencies": [{"name": "flask", "version": "0.5", "vulns": [{"id": "PYSEC-1"}]}]}
NPM = {"auditReportVersion": 2, "vulnerabilities": {"lodash": {"severity": "high"}}}
SARIF = {
    "version": "2.1.0",
    "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
    "runs": [
        {
            "tool": {
                "driver": {"rules": [{"id": "R1", "properties": {"security-severity": "9.8"}}]}
            },
            "results": [{"ruleId": "R1"}, {"ruleId": "R2", "level": "note"}],
        }
    ],
}


@pytest.mark.parametrize(
    ("data", "fmt", "blocking", "counts"),
    [
        (TRIVY, "trivy", 1, {"CRITICAL": 1, "MEDIUM": 1}),
        (PIP_AUDIT, "pip-audit", 1, {"HIGH": 1}),
        (NPM, "npm-audit", 1, {"HIGH": 1}),
        (SARIF, "sarif", 1, {"CRITICAL": 1, "LOW": 1}),
        ({"SchemaVersion": 2, "Results": []}, "trivy", 0, {}),
    ],
)
def test_scan_reports_are_detected_and_gated_on_critical_and_high(
    tmp_path: Path, data: object, fmt: str, blocking: int, counts: dict[str, int]
) -> None:
    report = scan.read_report(_write(tmp_path, data))
    assert report.format == fmt
    assert len(report.blocking(["CRITICAL", "HIGH"])) == blocking
    assert {k: v for k, v in report.counts().items() if v} == counts


def test_a_gate_on_critical_only_lets_high_through(tmp_path: Path) -> None:
    report = scan.read_report(_write(tmp_path, NPM))
    assert report.blocking(["CRITICAL"]) == []


def test_a_missing_or_unknown_report_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="no report"):
        scan.read_report(tmp_path / "nothing.json")
    with pytest.raises(PipelineError, match="cannot tell which scanner"):
        scan.read_report(_write(tmp_path, {"something": 1}))


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("DROP TABLE legacy_orders", "drop_table"),
        ("ALTER TABLE users DROP COLUMN email", "drop_column"),
        ("ALTER TABLE users ALTER COLUMN age TYPE BIGINT", "type_change"),
        ("ALTER TABLE users MODIFY COLUMN age BIGINT", "type_change"),
        ("ALTER TABLE users ADD COLUMN tier INT NOT NULL", "not_null"),
        ("ALTER TABLE users ALTER COLUMN tier SET NOT NULL", "not_null"),
        ("ALTER TABLE users RENAME COLUMN mail TO email", "rename"),
        ("ALTER TABLE users RENAME TO members", "rename"),
        ("RENAME TABLE users TO members", "rename"),
    ],
)
def test_each_destructive_kind_is_refused_with_file_line_and_statement(
    tmp_path: Path, sql: str, kind: str
) -> None:
    path = tmp_path / "V7__change.sql"
    path.write_text(f"-- expand first\nCREATE TABLE audit (id INT);\n\n{sql};\n")
    report = migrations.check_migrations([path])
    assert [(v.file, v.line, v.kind) for v in report.refused] == [("V7__change.sql", 4, kind)]
    assert report.refused[0].statement == sql
    assert report.refused[0].describe() == f"V7__change.sql:4: {kind}: {sql}"


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE t (id INT)",
        "ALTER TABLE users ADD COLUMN tier INT",
        "ALTER TABLE users ADD COLUMN tier INT NOT NULL DEFAULT 0",
        "CREATE INDEX ix_users_email ON users (email)",
        "INSERT INTO t VALUES ('DROP TABLE x; --')",
    ],
)
def test_expand_steps_pass(tmp_path: Path, sql: str) -> None:
    path = tmp_path / "V2__expand.sql"
    path.write_text(sql + ";\n")
    assert migrations.check_migrations([path]).violations == []


def test_a_contract_step_may_be_destructive_by_comment_or_name(tmp_path: Path) -> None:
    marked = tmp_path / "V8__drop_old_email.sql"
    marked.write_text("-- zerodown:contract\nALTER TABLE users DROP COLUMN old_email;\n")
    named = tmp_path / "V9__contract_drop_legacy.sql"
    named.write_text("DROP TABLE legacy;\n")
    report = migrations.check_migrations([marked, named])
    assert report.refused == []
    assert [v.allowed for v in report.violations] == [True, True]


def test_migration_files_sort_in_flyway_version_order(tmp_path: Path) -> None:
    for name in ("V10__c.sql", "V2__b.sql", "V1_1__a.sql", "R__views.sql"):
        (tmp_path / name).write_text("SELECT 1;")
    names = [p.name for p in migrations.migration_files(tmp_path)]
    assert names == ["V1_1__a.sql", "V2__b.sql", "V10__c.sql", "R__views.sql"]


async def test_build_output_is_content_hashed_and_reused(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    out.mkdir()
    (out / "app.py").write_text("print('hi')\n")
    first = await build.pack_output(out, tmp_path / "state", "a" * 40, "build")
    (out / "app.py").touch()  # a new mtime must not change the digest
    again = await build.pack_output(out, tmp_path / "state2", "b" * 40, "build")
    assert first.digest == again.digest and first.digest.startswith("sha256:")
    cached = build.cached_build(tmp_path / "state", "a" * 40, "build")
    assert cached is not None and cached.cached and cached.digest == first.digest
