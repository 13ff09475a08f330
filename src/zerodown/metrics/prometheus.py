"""Router metrics as Prometheus text (what the API serves at `/metrics`), via prometheus_client.

Counters and the latency histogram come from the router's running totals (they only grow while the
router runs); gauges are the state now. The latency histogram's Prometheus buckets are coarse
(5 ms .. 10 s) and sum the router's fine 10 % buckets that end at or below each bound.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from zerodown.metrics.series import STATUS_CLASSES, Histogram, bucket_upper

BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LABELS = ["service", "revision", "target"]


def _cumulative(histogram: Histogram) -> list[tuple[str, float]]:
    counts = sorted(histogram.counts.items())
    result: list[tuple[str, float]] = []
    for bound in BUCKETS_SECONDS:
        below = sum(c for i, c in counts if bucket_upper(i) <= bound * 1000)
        result.append((f"{bound:g}", float(below)))
    result.append(("+Inf", float(histogram.total)))
    return result


def _totals(metrics: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    totals = metrics.get("totals")
    if totals is not None:
        return list(totals)
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}  # older answers: sum the datapoints
    for point in metrics.get("datapoints", ()):
        key = (point["service"], point.get("revision", ""), point.get("target", ""))
        into = merged.setdefault(
            key,
            {"service": key[0], "revision": key[1], "target": key[2], "histogram": {}},
        )
        for name in ("requests", "upstream_errors", *STATUS_CLASSES):
            into[name] = into.get(name, 0) + int(point.get(name, 0))
        latency = dict(into.get("latency_ms") or {"sum": 0.0})
        latency["sum"] = float(latency["sum"]) + float(
            (point.get("latency_ms") or {}).get("sum") or 0
        )
        into["latency_ms"] = latency
        histogram = Histogram.from_json(into["histogram"])
        histogram.merge(Histogram.from_json(point.get("histogram")))
        into["histogram"] = histogram.to_json()
        into["inflight"] = int(point.get("inflight", 0))
    return list(merged.values())


class _RouterCollector(Collector):
    def __init__(self, metrics: Mapping[str, Any]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "zerodown_requests", "Requests answered, per target.", labels=LABELS
        )
        responses = CounterMetricFamily(
            "zerodown_responses", "Responses by status class.", labels=[*LABELS, "code_class"]
        )
        upstream = CounterMetricFamily(
            "zerodown_upstream_errors", "Requests the proxy answered 502/504.", labels=LABELS
        )
        latency = HistogramMetricFamily(
            "zerodown_request_duration_seconds", "Time to the end of the answer.", labels=LABELS
        )
        inflight = GaugeMetricFamily(
            "zerodown_inflight_requests", "Requests and streams in flight now.", labels=LABELS
        )
        healthy: dict[str, int] = {}
        unhealthy: dict[str, int] = {}
        for total in _totals(self.metrics):
            labels = [
                str(total.get("service", "")),
                str(total.get("revision", "")),
                str(total.get("target", "")),
            ]
            requests.add_metric(labels, float(total.get("requests", 0)))
            for name in STATUS_CLASSES:
                responses.add_metric([*labels, name], float(total.get(name, 0)))
            upstream.add_metric(labels, float(total.get("upstream_errors", 0)))
            histogram = Histogram.from_json(total.get("histogram"))
            latency_sum = float((total.get("latency_ms") or {}).get("sum") or 0.0) / 1000
            latency.add_metric(labels, _cumulative(histogram), latency_sum)
            inflight.add_metric(labels, float(total.get("inflight", 0)))
            health = total.get("health")
            service = labels[0]
            healthy.setdefault(service, 0)
            unhealthy.setdefault(service, 0)
            if health == "healthy":
                healthy[service] += 1
            elif health == "unhealthy":
                unhealthy[service] += 1
        yield from (requests, responses, upstream, latency, inflight)
        healthy_gauge = GaugeMetricFamily(
            "zerodown_healthy_targets", "Healthy targets per service now.", labels=["service"]
        )
        unhealthy_gauge = GaugeMetricFamily(
            "zerodown_unhealthy_targets", "Unhealthy targets per service now.", labels=["service"]
        )
        for service in sorted(healthy):
            healthy_gauge.add_metric([service], float(healthy[service]))
            unhealthy_gauge.add_metric([service], float(unhealthy[service]))
        zero = GaugeMetricFamily(
            "zerodown_zero_healthy_seconds",
            "Seconds without a target able to take traffic, over the router's memory (3 h).",
            labels=["service"],
        )
        zero_by_service: dict[str, float] = {}
        for point in self.metrics.get("health", ()):
            service = str(point["service"])
            zero_by_service[service] = zero_by_service.get(service, 0.0) + float(
                point.get("zero_healthy_seconds", 0.0)
            )
        for service in sorted(zero_by_service):
            zero.add_metric([service], zero_by_service[service])
        yield from (healthy_gauge, unhealthy_gauge, zero)


def render_prometheus(metrics_json: Mapping[str, Any]) -> bytes:
    """Prometheus text exposition of a router `metrics` answer."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RouterCollector(metrics_json))
    return generate_latest(registry)
