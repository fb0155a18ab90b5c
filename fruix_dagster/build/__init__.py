"""Make invocations as data, step fingerprints, the '>>>' marker parser, step runs."""
