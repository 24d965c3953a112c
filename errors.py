"""The one exception family the CLI turns into a clear message and exit code 2."""


class ParcelscanError(Exception):
    """A user-facing error: bad input, bad file, bad configuration. The message is the whole story."""


class ScanReadError(ParcelscanError):
    """A scan file could not be read or failed validation. The message names the file."""
