"""Fruix system knowledge: where the declared FreeBSD source store is."""
