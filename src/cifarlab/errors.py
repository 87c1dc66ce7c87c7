"""Errors that mean "the user asked for something we cannot do".

The CLI prints these as one line and exits non-zero, without a traceback. Anything
else that escapes is a bug and keeps its traceback.
"""


class CifarlabError(Exception):
    """A user-facing error: bad input, missing file, refused download."""


class DataError(CifarlabError):
    """A dataset could not be found, verified or read."""


class UnsafeInputError(DataError):
    """An archive, image or model file was refused because it is not safe to read."""
