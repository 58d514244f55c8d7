"""Exceptions the codec raises, each with a message a user can act on."""
from ..errors import MimiError


class WeightsError(MimiError):
    """Weights could not be found, downloaded or matched to the architecture."""


class DeviceError(MimiError):
    """The requested device or dtype is not available here."""


class StreamError(MimiError):
    """A streaming call that does not fit the state it was given."""


class InvalidArgument(MimiError, ValueError):
    """A call with arguments outside what the codec takes (a codebook count, a codes tensor's shape)."""
