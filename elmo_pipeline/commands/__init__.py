"""Every command of ``elmo-pipeline``, one module each: a thin face (its options, then one call into
the floor that does the work). ``elmo_pipeline/cli.py`` finds them by name."""
