"""The benchmark report: wrk/hey parsers on captured output, and the RESULTS.md writer."""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from benchmarks.machine import MachineFacts, read_cpu_model, read_ram_gib
from benchmarks.processes import CpuSample, ProfileLine, fixed_rate_load, read_profile
from benchmarks.report import (
    HeyResult,
    Section,
    Table,
    ToolOutputError,
    WrkResult,
    assemble_results,
    parse_hey,
    parse_wrk,
    read_sections,
    write_results,
    wrk_seconds,
)
from benchmarks.router_bench import (
    DIRECT,
    HAPROXY_1,
    HAPROXY_DEFAULT,
    ZERODOWN,
    PathFigures,
    RouterFigures,
    build_section,
)

# Captured from `wrk -t1 -c50 -d2s --latency` against nginx on 127.0.0.1.
WRK_OK = """Running 2s test @ http://127.0.0.1:18931/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   680.47us  638.71us   8.37ms   94.65%
    Req/Sec    60.96k    20.57k  100.97k    70.00%
  Latency Distribution
     50%  613.00us
     75%  736.00us
     90%  847.00us
     99%    4.09ms
  121257 requests in 2.00s, 17.35MB read
Requests/sec:  60545.73
Transfer/sec:      8.66MB
"""

# Captured against a server answering 503, with a socket-error line as wrk prints it on timeouts.
WRK_ERRORS = """Running 1s test @ http://127.0.0.1:18933/
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   283.77us  206.77us   4.05ms   92.67%
    Req/Sec     7.36k   801.06     8.72k    72.73%
  Latency Distribution
     50%  271.00us
     75%  322.00us
     90%  415.00us
     99%    1.03s
  8047 requests in 1.10s, 0.98MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 8047
Requests/sec:   7316.77
Transfer/sec:      0.89MB
"""

WRK_REFUSED = "unable to connect to 127.0.0.1:18932 Connection refused\n"

# Captured from `hey -z 2s -c 10 -q 100` against nginx.
HEY_OK = """
Summary:
  Total:\t2.0090 secs
  Slowest:\t0.0051 secs
  Fastest:\t0.0001 secs
  Average:\t0.0006 secs
  Requests/sec:\t995.4996
\x20\x20
  Total data:\t6000 bytes
  Size/request:\t3 bytes

Response time histogram:
  0.000 [1]\t|
  0.001 [1267]\t|■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■
  0.005 [1]\t|


Latency distribution:
  10% in 0.0002 secs
  25% in 0.0003 secs
  50% in 0.0004 secs
  75% in 0.0007 secs
  90% in 0.0010 secs
  95% in 0.0014 secs
  99% in 0.0039 secs

Details (average, fastest, slowest):
  DNS+dialup:\t0.0000 secs, 0.0001 secs, 0.0051 secs
  resp read:\t0.0000 secs, 0.0000 secs, 0.0012 secs

Status code distribution:
  [200]\t2000 responses


"""

# Captured from hey against a closed port.
HEY_REFUSED = """
Summary:
  Total:\t1.0061 secs
  Slowest:\t0.0000 secs
  Fastest:\t0.0000 secs
  Average:\t NaN secs
  Requests/sec:\t9.9396

Response time histogram:


Latency distribution:

Status code distribution:

Error distribution:
  [10]\tGet "http://127.0.0.1:18932/": dial tcp 127.0.0.1:18932: connect: connection refused

"""

# Captured from `hey -n 20` against a server answering 503: too few samples for a 99 % line,
# which hey then prints as "0% in 0.0000 secs".
HEY_503 = """
Summary:
  Total:\t0.0100 secs
  Requests/sec:\t1996.2919

Latency distribution:
  10% in 0.0003 secs
  50% in 0.0006 secs
  95% in 0.0030 secs
  0% in 0.0000 secs

Status code distribution:
  [503]\t20 responses
"""

NOW = datetime(2026, 11, 22, 4, 5, tzinfo=UTC)
LATER = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)

MACHINE = MachineFacts(
    cpu_model="AMD EPYC",
    cores=2,
    ram_gib=23.5,
    kernel="Linux 6.1 (x86_64)",
    os_release="Debian GNU/Linux 12",
    python="CPython 3.11.7",
    tools={"wrk": "wrk 4.1.0"},
)


def make_section(key: str, figure: str, at: datetime = NOW) -> Section:
    return Section(
        key=key,
        title=f"{key.title()} benchmark",
        goal="fast enough",
        met=True,
        tables=(Table(("Path", "Requests/s"), (("direct", figure),)),),
        limits=("the CPU",),
        measured_at=at,
        measured_on=MACHINE.one_line(),
    )


# -- parsers -----------------------------------------------------------------------------------


def test_wrk_summary_gives_rate_percentiles_and_no_errors() -> None:
    result = parse_wrk(WRK_OK)
    assert result.requests == 121257
    assert result.seconds == pytest.approx(2.0)
    assert result.requests_per_sec == pytest.approx(60545.73)
    assert result.p50 == pytest.approx(613e-6)
    assert result.p99 == pytest.approx(4.09e-3)
    assert result.errors == 0


def test_wrk_errors_add_socket_errors_and_non_2xx_answers() -> None:
    result = parse_wrk(WRK_ERRORS)
    assert result.socket_errors == 1 + 2 + 3 + 4
    assert result.non_2xx == 8047
    assert result.errors == 10 + 8047
    assert result.p99 == pytest.approx(1.03)


def test_wrk_that_could_not_connect_is_a_tool_output_error_naming_the_cause() -> None:
    with pytest.raises(ToolOutputError, match="unable to connect"):
        parse_wrk(WRK_REFUSED)


def test_wrk_without_latency_flag_is_refused() -> None:
    without = "\n".join(line for line in WRK_OK.splitlines() if "%  " not in line)
    with pytest.raises(ToolOutputError, match="--latency"):
        parse_wrk(without)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("613.00us", 613e-6), ("4.09ms", 4.09e-3), ("1.20s", 1.2), ("2.00m", 120.0)],
)
def test_wrk_durations_convert_every_unit_to_seconds(text: str, seconds: float) -> None:
    assert wrk_seconds(text) == pytest.approx(seconds)


def test_hey_summary_gives_rate_percentiles_and_statuses() -> None:
    result = parse_hey(HEY_OK)
    assert result.requests_per_sec == pytest.approx(995.4996)
    assert result.p50 == pytest.approx(0.0004)
    assert result.p99 == pytest.approx(0.0039)
    assert result.statuses == {200: 2000}
    assert result.responses == 2000
    assert result.errors == 0


def test_hey_transport_errors_are_counted_and_missing_percentiles_are_none() -> None:
    result = parse_hey(HEY_REFUSED)
    assert result.transport_errors == 10
    assert result.errors == 10
    assert result.p50 is None and result.p99 is None


def test_hey_5xx_answers_are_errors_and_its_bogus_zero_percent_line_is_ignored() -> None:
    result = parse_hey(HEY_503)
    assert result.errors == 20
    assert result.p50 == pytest.approx(0.0006)
    assert result.p99 is None


def test_hey_without_summary_is_a_tool_output_error() -> None:
    with pytest.raises(ToolOutputError):
        parse_hey("Usage: hey [options...] <url>\n")


# -- machine -----------------------------------------------------------------------------------


def test_machine_facts_read_from_proc_text() -> None:
    assert read_cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"
    assert read_ram_gib("MemTotal:       24684084 kB\n") == pytest.approx(23.54, abs=0.01)


# -- the writer --------------------------------------------------------------------------------


def test_fresh_results_hold_machine_and_sections_in_registry_order() -> None:
    text = assemble_results(
        MACHINE,
        [make_section("zeta", "1"), make_section("alpha", "2")],
        None,
        order=["alpha", "zeta"],
        now=NOW,
        command="python -m benchmarks",
    )
    assert text.startswith("# zerodown benchmarks")
    assert "| CPU | AMD EPYC |" in text and "| Cores | 2 |" in text
    assert "2026-11-22 04:05 UTC, `python -m benchmarks`" in text
    assert list(read_sections(text)) == ["alpha", "zeta"]
    assert "**Goal:** fast enough — **met**." in text
    assert "Kept from an earlier run" not in text


def test_sections_not_run_keep_their_text_with_a_dated_note(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    order = ["router", "deploy"]
    first = [make_section("router", "111"), make_section("deploy", "222")]
    write_results(results, MACHINE, first, order=order, command="bench", now=NOW)
    text = write_results(
        results, MACHINE, [make_section("router", "333", LATER)], order=order,
        command="bench --only router", now=LATER,
    )  # fmt: skip
    sections = read_sections(text)
    assert "333" in sections["router"].text and "111" not in text  # replaced, not appended
    kept = sections["deploy"].text
    assert "| direct | 222 |" in kept
    assert "Not re-run on 2026-11-23 09:30 UTC" in kept
    assert "from the run of 2026-11-22 04:05 UTC" in kept
    assert results.read_text() == text


def test_keeping_a_section_twice_leaves_one_note_with_the_latest_date(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    order = ["router", "deploy"]
    write_results(results, MACHINE, [make_section("deploy", "222")], order=order, command="b",
                  now=NOW)  # fmt: skip
    for day in (LATER, LATER.replace(day=24)):
        write_results(results, MACHINE, [make_section("router", "9", day)], order=order,
                      command="b", now=day)  # fmt: skip
    kept = read_sections(results.read_text())["deploy"].text
    assert kept.count("Kept from an earlier run") == 1
    assert "Not re-run on 2026-11-24" in kept
    assert "from the run of 2026-11-22 04:05 UTC" in kept


def test_unknown_sections_of_the_old_file_are_kept_at_the_end(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    write_results(results, MACHINE, [make_section("retired", "5")], order=["retired"],
                  command="b", now=NOW)  # fmt: skip
    text = write_results(results, MACHINE, [make_section("router", "6")], order=["router"],
                         command="b", now=LATER)  # fmt: skip
    assert list(read_sections(text)) == ["router", "retired"]


def test_a_goal_that_could_not_be_judged_says_so() -> None:
    section = make_section("router", "1")
    unjudged = Section(**{**section.__dict__, "met": None})
    assert "not judged in this run" in unjudged.render()
    assert "**not met**" in Section(**{**section.__dict__, "met": False}).render()


# -- the router section ------------------------------------------------------------------------


def router_figures(zerodown_rps: float, zerodown_p99: float) -> RouterFigures:
    def path(name: str, rps: float, p99: float, cpu: float | None) -> PathFigures:
        wrk = WrkResult(int(rps * 10), 10.0, rps, 0.001, 0.004, 0, 0)
        hey = HeyResult(1000.0, 0.0005, p99, {200: 10000})
        return PathFigures(name, wrk, hey, cpu, 0.5)

    paths = [
        path(DIRECT, 40000, 0.0010, None),
        path(ZERODOWN, zerodown_rps, zerodown_p99, 1.0),
        path(HAPROXY_1, 20000, 0.0012, 0.6),
        path(HAPROXY_DEFAULT, 22000, 0.0012, 0.7),
    ]
    top = [ProfileLine("zerodown/routers/builtin/proxy.py:1(data_received)", 9, 1.5, 0.1)]
    return RouterFigures({p.name: p for p in paths}, top, top, 10)


@pytest.mark.parametrize(
    ("rps", "p99", "met"),
    [(10000, 0.0030, True), (9000, 0.0030, False), (10000, 0.0031, False)],
)
def test_router_goal_is_half_haproxy_throughput_and_at_most_2ms_added_p99(
    rps: float, p99: float, met: bool
) -> None:
    section = build_section(router_figures(rps, p99), MACHINE, NOW, quick=False, load=0.1)
    assert section.met is met
    text = section.render()
    assert f"| {ZERODOWN} | {rps:,.0f} |" in text
    assert "data_received" in text  # the profile reaches the "what limits it" note
    # CPU per request: zerodown 1 core / 10,000 req/s (or 9,000), HAProxy 0.6 core / 20,000 req/s
    assert f"{1e6 / rps:.1f} µs" in text and "30.0 µs" in text


def test_outside_work_is_machine_busy_time_minus_the_benchmarks_own() -> None:
    before = CpuSample(at=100.0, proxy=10.0, upstream=5.0, children=1.0, machine=50.0)
    after = CpuSample(at=102.0, proxy=11.8, upstream=6.0, children=2.0, machine=55.0)
    share = after - before
    assert share.proxy == pytest.approx(0.9)
    assert share.upstream == pytest.approx(0.5)
    assert share.children == pytest.approx(0.5)
    assert share.other == pytest.approx((5.0 - 1.8 - 1.0 - 1.0) / 2)


async def test_fixed_rate_fallback_keeps_its_rate_and_counts_statuses() -> None:
    """The Python stand-in for hey, against a real keep-alive server on 127.0.0.1."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:  # bounded by the client: it closes after its 0.5 s
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        result = await fixed_rate_load("127.0.0.1", port, 0.5, workers=2, rate_per_worker=20)
    assert result.tool == "asyncio"
    assert result.statuses == {200: 20}  # 2 workers x 20 req/s x 0.5 s
    assert result.errors == 0
    assert result.p50 is not None and result.p99 is not None and result.p99 < 0.5
    assert 25 <= result.requests_per_sec <= 40  # 20 answers over 0.5 s, or longer if stalled


def test_profile_top_leaves_out_the_entry_chain(tmp_path: Path) -> None:
    def leaf() -> int:
        return sum(range(20_000))

    def middle() -> None:
        for _ in range(20):
            leaf()

    def other() -> None:
        for _ in range(40):
            leaf()

    def entry() -> None:  # like the daemon's main: its cumulative time is the whole run
        middle()
        other()

    profiler = cProfile.Profile()
    profiler.runcall(entry)
    profiler.dump_stats(tmp_path / "run.prof")
    top = read_profile(tmp_path / "run.prof", 4)
    names = {line.function.rpartition("(")[2].rstrip(")") for line in top}
    assert names == {"leaf", "<built-in method builtins.sum>", "other", "middle"}  # no "entry"
    assert next(line.calls for line in top if line.function.endswith("(leaf)")) == 60
    own = read_profile(tmp_path / "run.prof", 1, by="tottime")
    assert own[0].function == "<built-in method builtins.sum>"
