"""evaplan's planner: pure-Python models of memory, compute, communication and cost.

Nothing in this package imports torch, deepspeed or kubernetes: `evaplan estimate`
must start fast on a laptop with only the core dependencies installed.
"""
