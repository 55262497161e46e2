"""The job functions and handlers of the user documentation, as
plone.app.async.tests.funcs had them."""

from plone.app.textfield.value import RichTextValue
from Products.CMFCore.utils import getToolByName


def addNumbers(context, x1, x2):  # noqa: N802 - the documented name
    return x1 + x2


def createDocument(context, id, title, description, body):  # noqa: A002, N802
    context.invokeFactory(
        "Document",
        id,
        title=title,
        description=description,
        text=RichTextValue(body, "text/plain", "text/html"),
    )
    return context[id].id


def submitObject(context, id):  # noqa: A002, N802
    obj = context[id]
    wt = getToolByName(context, "portal_workflow")
    wt.doActionFor(obj, "submit")


def failingJob(context):  # noqa: N802
    raise RuntimeError("FooBared")


results = []


def successHandler(event):  # noqa: N802
    results.append(event.object)


def failureHandler(event):  # noqa: N802
    exc = event.object
    results.append(f"{exc.type}: {exc.value}")


def job_failure_callback(result):
    results.append(result)


def job_success_callback(result):
    results.append(f"Success: {result}")
