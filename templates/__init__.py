"""Bundled Jinja2 templates (package data): the DeepSpeed config and Kubernetes manifests.

Rendered by `launcher.render`; values go in through `| tojson` and the templates hold no logic
beyond layout: every value is computed (and tested) in Python, so a template cannot compute a
different number from the one the planner printed.
"""
