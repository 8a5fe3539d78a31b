"""The ``churn`` command line, above every stage (``cli.main``)."""
