"""One module per `evaplan` command group; `launcher.cli` registers them."""
