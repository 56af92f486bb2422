"""Bundled Jinja2 templates (package data): the DeepSpeed config and Kubernetes manifests.

Rendered by `launcher.render`; values go in through `| tojson` and the templates hold no logic
beyond layout (DESIGN.md).
"""
