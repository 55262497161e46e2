"""The REST API of the jobs (plone.restapi services): ``@async-jobs`` and
``@async-workers``, documented in docs/restapi.md."""
