"""parallel-flash: boot many Windows Phone class devices at once from one WIM."""

__version__ = "0.1.0"

__all__ = ("__version__",)
