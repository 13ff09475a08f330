"""haproxy.cfg as zerodown writes it, the weight scaling, and the parsing of HAProxy's answers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from zerodown.config.router import HaproxyRouterConfig
from zerodown.health.spec import HealthCheckSpec
from zerodown.routers.base import RouteSpec, TargetHealth, TargetSpec
from zerodown.routers.haproxy.config import admin_address, render_config
from zerodown.routers.haproxy.process import current_workers, parse_show_proc
from zerodown.routers.haproxy.runtime_api import is_success, translate
from zerodown.routers.haproxy.state import HaproxyPaths, HaproxyState, RouteEntry, scaled_weights
from zerodown.routers.haproxy.stats import parse_servers_conn, parse_show_stat

LISTEN = ("127.0.0.1:18080", "127.0.0.1:18081")


def sample(tmp_path: Path, **settings: object) -> tuple[str, HaproxyPaths]:
    """Two routes: web.prod (host, /api, sticky, http check, a live and a preview target) on
    the first address only, web.dev on every address."""
    config = HaproxyRouterConfig(listen=LISTEN, **settings)  # type: ignore[arg-type]
    paths = HaproxyPaths(tmp_path / "haproxy")
    prod = RouteSpec(
        "web.prod",
        hosts=("Example.com",),
        path_prefix="/api",
        listen=(LISTEN[0],),
        health=HealthCheckSpec(
            path="/health", statuses=(200, 204), interval=2, healthy_threshold=3
        ),
        sticky=True,
    )
    live = TargetSpec("web.prod", "i-1", "127.0.0.1", 9001, revision="r1", pool="r1")
    preview = TargetSpec("web.prod", "i-2", "127.0.0.1", 9002, "r2", pool="preview")
    state = HaproxyState(
        listen=list(LISTEN),
        routes={
            "web.prod": RouteEntry(prod, {"i-1": live, "i-2": preview}),
            "web.dev": RouteEntry(RouteSpec("web.dev", balance="round_robin")),
        },
    )
    return render_config(config, paths, state, admin_address(config, paths)), paths


def test_global_section_has_master_socket_state_file_and_hard_stop(tmp_path: Path) -> None:
    """Runtime API at level admin with listeners exposed, server-state-file loaded globally,
    hard-stop-after and maxconn from the settings."""
    text, paths = sample(tmp_path, hard_stop_after=90.0, maxconn=2000)
    assert "    master-worker\n" in text
    assert f"stats socket {paths.admin_socket} mode 600 level admin expose-fd listeners" in text
    assert f"server-state-file {paths.server_state}" in text
    assert "load-server-state-from-file global" in text
    assert "hard-stop-after 90000ms" in text and "maxconn 2000" in text
    tcp, _ = sample(tmp_path, admin="127.0.0.1:9999")
    assert "stats socket ipv4@127.0.0.1:9999 level admin expose-fd listeners" in tcp


def test_frontends_route_by_address_host_and_path_with_a_preview_backend(tmp_path: Path) -> None:
    """One frontend per address; web.prod only on its address, matched on Host and /api on a
    segment boundary, its preview header selecting the preview backend first."""
    text, _ = sample(tmp_path)
    first, second = text.split("frontend listen_127.0.0.1:18081")
    first = first.split("frontend listen_127.0.0.1:18080")[1]
    assert "bind 127.0.0.1:18080" in first and "bind 127.0.0.1:18081" in second
    assert "acl r0_host var(txn.host) -m str example.com" in first
    assert "acl r0_path path -m beg /api/" in first and "acl r0_path path -m str /api" in first
    assert "acl r0_preview req.hdr(X-Zerodown-Preview) -m found" in first
    prod = first.index("use_backend web.prod__preview if r0_host r0_path r0_preview")
    assert (
        prod
        < first.index("use_backend web.prod if r0_host r0_path")
        < first.index("use_backend web.dev\n")
    )
    assert "web.prod" not in second.split("backend web.prod")[0]
    assert "default_backend zerodown_no_route" in second


def test_backends_carry_checks_balance_cookie_and_servers(tmp_path: Path) -> None:
    """The route's health check (path, Host, statuses, inter/rise/fall), balance, the sticky
    revision cookie, and each target as a server in its pool's backend."""
    text, _ = sample(tmp_path)
    prod = text.split("\nbackend web.prod\n")[1].split("\nbackend ")[0]
    assert "balance leastconn" in prod and "option httpchk" in prod
    assert "http-check send meth GET uri /health ver HTTP/1.1 hdr Host localhost" in prod
    assert "http-check expect rstatus ^(200|204)$" in prod
    assert "cookie zerodown_rev insert indirect nocache" in prod
    assert "server i-1 127.0.0.1:9001 weight 100 check inter 2000ms" in prod
    assert "rise 3 fall 3 cookie r1" in prod and "i-2" not in prod
    preview = text.split("\nbackend web.prod__preview\n")[1].split("\nbackend ")[0]
    assert "server i-2 127.0.0.1:9002 weight 100 check" in preview and "cookie" not in preview
    dev = text.split("\nbackend web.dev\n")[1].split("\nbackend ")[0]
    assert "balance roundrobin" in dev and "httpchk" not in dev


def test_every_server_keeps_idle_connections_as_a_config_file_server_does(tmp_path: Path) -> None:
    """Each server line (the same words `add server` gets) sets HAProxy's idle-pool defaults
    for config-file servers: a 2.6 `add server` has both at 0 and reuses no connection."""
    text, _ = sample(tmp_path)
    servers = [line for line in text.splitlines() if line.strip().startswith("server ")]
    assert len(servers) == 2
    assert all(line.endswith(" pool-max-conn -1 pool-purge-delay 5s") for line in servers)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")
def test_haproxy_accepts_the_generated_configuration(tmp_path: Path) -> None:
    """`haproxy -c` finds the file valid."""
    text, paths = sample(tmp_path)
    paths.root.mkdir(parents=True)
    paths.server_state.write_text("1\n")
    paths.config.write_text(text)
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(paths.config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


def test_weights_above_256_are_scaled_together() -> None:
    """HAProxy's weights stop at 256: 360 : 40 becomes 256 : 28, a positive weight stays >= 1;
    integers up to 256 are kept; fractions are scaled too."""
    shares = {"a": 360.0, "b": 40.0, "c": 1.0, "d": 0.0}
    assert scaled_weights(shares) == {"a": 256, "b": 28, "c": 1, "d": 0}
    assert scaled_weights({"b": 40.0, "c": 1.0, "d": 0.0}) == {"b": 40, "c": 1, "d": 0}
    assert scaled_weights({"a": 2.5, "b": 90.0}) == {"a": 7, "b": 256}


def test_haproxy_refusals_become_sentences_with_a_hint() -> None:
    """HAProxy's messages are kept and followed by what to do."""
    error = translate(
        "add server web.prod/x 127.0.0.1:1",
        "Backend must use a dynamic load balancing to support dynamic servers.\n",
    )
    assert str(error).startswith("HAProxy refused `add server web.prod/x 127.0.0.1:1`: Backend")
    assert "is the backend's balance dynamic" in str(error)
    assert not is_success("set server a/b weight 3", "No such server.")
    assert is_success("set server a/b weight 3", "")
    assert is_success("add server a/b 1.2.3.4:5", "New server registered.")
    assert not is_success("show stat", "Unknown command, but maybe ...")


def test_show_stat_servers_conn_and_show_proc_are_parsed() -> None:
    """Server rows of `show stat` (status -> health), used connections, current workers."""
    stat = (
        "# pxname,svname,scur,status,weight,hrsp_2xx,hrsp_5xx,ttime,ttime_max,type\n"
        "fe,FRONTEND,0,OPEN,,0,0,,,0\n"
        "web.prod,a,2,UP,100,7,1,12,40,2\n"
        "web.prod,b,0,DOWN 1/2,10,0,0,0,0,2\n"
        "web.prod,c,1,DRAIN,0,3,0,5,9,2\n"
        "web.prod,BACKEND,3,UP,110,10,1,0,0,1\n"
    )
    rows = {r.server: r for r in parse_show_stat(stat)}
    assert set(rows) == {"a", "b", "c"}
    assert (rows["a"].requests, rows["a"].scur, rows["a"].health) == (8, 2, TargetHealth.HEALTHY)
    assert rows["b"].health is TargetHealth.UNHEALTHY and rows["c"].draining
    conn = (
        "# bkname/svname bkid/svid addr port - purge_delay used_cur used_max need_est\n"
        "web.prod/a 3/1 127.0.0.1 9 - 0 4 5 0\n"
    )
    assert parse_servers_conn(conn) == {"a": 4}
    procs = parse_show_proc(
        "#<PID>          <type>          <reloads>       <uptime>        <version>\n"
        "100             master          2 [failed: 1]   0d00h10m07s     2.6.12\n"
        "# workers\n"
        "300             worker          0               0d00h00m01s     2.6.12\n"
        "200             worker          1               0d00h05m00s     2.6.12\n"
    )
    assert procs[0].kind == "master" and procs[0].failed == 1
    assert [p.pid for p in current_workers(procs)] == [300]
