"""The project's config error, in a module that imports nothing (so that reading a cached study,
which every Snakemake process does, never pays for importing torch)."""


class ConfigError(ValueError):
    """A config value that is not allowed; the message names key, value and what is allowed."""
