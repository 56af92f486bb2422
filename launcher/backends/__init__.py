"""Where jobs run: kubernetes (a cluster) and local (torchrun on this machine)."""
