"""The ``mlpipe`` command line."""
