"""CloudWatch-style alarms on the metrics the router measures (and on log metric filters).

`model` defines alarms, `evaluate` decides their state from datapoints (pure, clock injected),
`presets` has the seeds' alarms, `guard` watches a deployment, `bake` waits the bake window.
"""
