"""The ``tucker-segment`` command line: one thin subcommand per engine function."""
