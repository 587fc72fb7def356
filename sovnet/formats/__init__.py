"""Bounded, pure parsers for model file formats."""
