"""One module per ``geocells`` subcommand: ``HELP``, ``add_arguments(parser)``, ``main(args)``."""
