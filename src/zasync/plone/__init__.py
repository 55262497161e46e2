"""zasync.plone: the Plone integration of zasync (the successor of
plone.app.async).

``getUtility(zasync.plone.interfaces.IAsyncService)`` queues jobs that run
in the site, as the user who queued them; a Zope process becomes a worker
by including ``single_db_worker.zcml`` or ``multi_db_worker.zcml``. Needs
the ``plone`` extra: ``pip install -c constraints.txt 'zasync[plone]'``.
"""
