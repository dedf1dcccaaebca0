"""Helpers the tests share: synthetic media, clips, networks, the CLI under test, the browser."""
