"""The bundled EVA-CLIP trainer: vision and text towers from a model profile, trained with
DeepSpeed ZeRO from the config evaplan renders.

Importing this package does not import torch; `evaclip.config` is usable with the core install.
"""
