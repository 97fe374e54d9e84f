"""Operator tools: dead-letter inspection and replay, reprocessing of stored raw bodies."""
