"""psinspect: surface inspection from photometric-stereo normal maps."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("psinspect")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
