"""Tools on top of everything: the ``dreamstate`` command and its subcommands, the terminal
monitor, benchmarks, model training and export."""
