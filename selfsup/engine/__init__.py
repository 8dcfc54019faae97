"""The training engine shared by all methods."""
