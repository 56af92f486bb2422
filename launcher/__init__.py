"""evaplan's command line and job launcher: render bundles, submit them, watch them run."""
