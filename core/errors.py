"""User-facing errors. The message names the input at fault and how to fix it."""


class EdificeError(Exception):
    """Base class of errors that are shown to the user as they are (no traceback)."""


class InputError(EdificeError):
    """Bad input: the message names the parameter or file and the fix."""

    def __init__(self, name: str, problem: str, fix: str = ""):
        self.name = name
        self.problem = problem
        self.fix = fix
        text = f"{name}: {problem}"
        if fix:
            text += f" Fix: {fix}"
        super().__init__(text)

    def __reduce__(self):  # so that it crosses process boundaries (Dask workers) intact
        return type(self), (self.name, self.problem, self.fix)


class Cancelled(EdificeError):
    """The user cancelled the run; outputs were not written."""

    def __init__(self, message: str = "Cancelled by the user; no output was written."):
        super().__init__(message)
