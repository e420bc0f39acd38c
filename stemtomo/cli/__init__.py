"""The command-line interface (the only place with argv, files-as-arguments and rich output)."""
