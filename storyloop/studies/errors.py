"""The one error every study operation raises for a user's mistake."""

from storyloop.db.rounds import RoundError


class StudyError(RoundError):
    """A study operation that cannot be carried out; nothing was written. (A RoundError, so the CLI
    shows it as one line, as it does a round's.)"""
