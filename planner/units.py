"""Byte units shared by the planner and the launcher: one definition, so a GiB never drifts."""

# Binary gibibyte (IEC 80000-13): HBM sizes (hbm_gib), DeepSpeed's memory reports and torch's
# memory counters are all in powers of two.
GIB = 2**30
