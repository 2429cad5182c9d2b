"""The package version, in a leaf module so that reports can import it without importing the package."""

__version__ = "0.3.0.dev0"
