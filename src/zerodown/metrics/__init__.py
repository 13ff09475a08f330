"""Request metrics of routes: the `MetricsSource` every reader uses (`source`), 10 s datapoints
and their aggregation (`series`), Prometheus text (`prometheus`), per-minute rollups into the store
(`rollup`) and log metric filters (`logfilters`). The built-in router's recorder lives with the
router (`zerodown.routers.builtin.recorder`)."""
