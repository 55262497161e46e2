"""The job functions and handlers of the user documentation, as
plone.app.async.tests.funcs had them."""

from typing import Any

from plone.app.textfield.value import RichTextValue
from Products.CMFCore.utils import getToolByName


def addNumbers(context: Any, x1: Any, x2: Any) -> Any:  # noqa: N802 - the documented name
    return x1 + x2


def createDocument(  # noqa: N802 - compat name
    context: Any, id: str, title: str, description: str, body: str
) -> str:
    context.invokeFactory(
        "Document",
        id,
        title=title,
        description=description,
        text=RichTextValue(body, "text/plain", "text/html"),
    )
    return context[id].id


def submitObject(context: Any, id: str) -> None:  # noqa: N802 - compat name
    obj = context[id]
    wt = getToolByName(context, "portal_workflow")
    wt.doActionFor(obj, "submit")


def failingJob(context: Any) -> None:  # noqa: N802
    raise RuntimeError("FooBared")


results: list[Any] = []


def successHandler(event: Any) -> None:  # noqa: N802
    results.append(event.object)


def failureHandler(event: Any) -> None:  # noqa: N802
    exc = event.object
    results.append(f"{exc.type}: {exc.value}")


def job_failure_callback(result: Any) -> None:
    results.append(result)


def job_success_callback(result: Any) -> None:
    results.append(f"Success: {result}")
