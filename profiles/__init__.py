"""Bundled profiles (package data): models/, hardware/ and offerings/ as YAML.

Read them through `planner.profiles`, which also merges a user's own profile folders.
"""
