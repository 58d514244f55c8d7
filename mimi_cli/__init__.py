"""mimi-cli: Kyutai's Mimi codec as a command-line toolkit and a Python library."""
__version__ = "0.1.0"
