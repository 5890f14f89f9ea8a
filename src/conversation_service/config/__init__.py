"""Configuration: environment-driven settings and fixed constants."""
