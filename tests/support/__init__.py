"""Test-support code shared by the test suite.

- :mod:`tests.support.sshguest` -- :class:`SshGuest`, a real OpenSSH ``sshd``
  on a loopback address inside its own mount namespace, shaped like a booted
  development-enabled Fruix guest.
- :mod:`tests.support.fixtures` -- pytest fixtures ``ssh_guest`` and
  ``ssh_guest_factory`` built on it (import them into a conftest).
"""
