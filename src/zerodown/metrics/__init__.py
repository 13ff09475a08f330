"""What the router measures: 10 s datapoints (`series`), the in-router `recorder`, Prometheus
text (`prometheus`), per-minute rollups into the store (`rollup`) and log metric filters
(`logfilters`)."""
