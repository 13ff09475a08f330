"""Built-in stage kinds of the pipeline: test, build, scan, migrations, publish, deploy."""
