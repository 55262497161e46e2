"""Helpers for the tests of zasync.plone (and of add-ons built on it): job
functions stored in jobs by reference, so they live in an importable
module."""
