"""Tests of the exporter: graphs against PyTorch, checkpoint layouts, adapters, precision recipes, the toy models."""
