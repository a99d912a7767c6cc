"""Generators of test data with real beamline file structures."""
