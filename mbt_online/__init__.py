"""mbt-online."""
