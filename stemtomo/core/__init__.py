"""Tensor core: geometry and rays, projector/back-projector, image formation, fields, samplers.

Tensors in, tensors out; the device follows the input; no files, no CLI.
"""
