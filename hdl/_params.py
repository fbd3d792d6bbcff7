"""Parameter checking shared by the building blocks."""

__all__ = ["reject"]


def reject(component, exc):
    """Return ``exc`` for raising from a component's ``__init__``.

    An Amaranth elaboratable warns when it is garbage-collected without being used; one whose
    parameters were refused was never meant to be used, so the warning is silenced first.
    """
    component._MustUse__silence = True
    return exc
