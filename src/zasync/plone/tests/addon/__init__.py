"""A small add-on that declares schedules in its profile (``zasync.xml``),
for the tests of zasync.plone's periodic jobs and as an example: its
profiles are registered by its ``configure.zcml``, which only tests load."""
