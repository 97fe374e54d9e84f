"""Fakes of the services the project talks to, for tests."""
