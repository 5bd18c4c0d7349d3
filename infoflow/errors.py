"""The base of infoflow's own errors: their message is the whole story."""


class UserError(Exception):
    """Bad input or a run that cannot go on (a rule broken, a missing data set, a diverged
    loss): the message says what and what to do, and it is logged without a traceback."""
