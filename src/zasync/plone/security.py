"""Who a Plone job runs as: the user who queued it, found again by id in the
same user folder when the job runs, with the roles that user has then.
Anonymous jobs run as anonymous."""

from __future__ import annotations

from typing import Any

from AccessControl.SecurityManagement import getSecurityManager, newSecurityManager
from AccessControl.SpecialUsers import nobody
from AccessControl.users import SpecialUser
from Acquisition import aq_base, aq_inner, aq_parent

from zasync.plone.interfaces import UserNotFoundError


def is_anonymous(user: Any) -> bool:
    base = aq_base(user)
    return (
        base is None
        or base is nobody
        or (
            isinstance(base, SpecialUser) and user.getUserName() == nobody.getUserName()
        )
    )


def capture_user() -> tuple[tuple[str, ...] | None, str | None]:
    """``(user folder path, user id)`` of the current user, or ``(None,
    None)`` for anonymous. Raises ValueError for a user that belongs to no
    user folder (such as Zope's system user), who could not be found again."""
    user = getSecurityManager().getUser()
    if is_anonymous(user):
        return None, None
    user_folder = aq_parent(aq_inner(user))
    if user_folder is None or not hasattr(user_folder, "getUserById"):
        raise ValueError(
            f"zasync.plone cannot run a job as {user.getUserName()!r}: that "
            f"user belongs to no user folder, so the worker could not find it "
            f"again. Queue the job as a user of the site or of the Zope root, "
            f"e.g. inside plone.api.env.adopt_user(username='admin')"
        )
    return tuple(user_folder.getPhysicalPath()), user.getId()


def login_again(
    app: Any,
    *,
    user_folder_path: tuple[str, ...] | None,
    user_id: str | None,
    request: Any,
) -> Any:
    """Make the user found again the current user of this thread; return
    it. Raises UserNotFoundError naming the user or the user folder when
    either is gone."""
    if user_id is None:
        newSecurityManager(request, nobody)
        return nobody
    path = "/".join(user_folder_path or ())
    user_folder = app.unrestrictedTraverse(user_folder_path, None)
    if user_folder is None or not hasattr(aq_base(user_folder), "getUserById"):
        raise UserNotFoundError(
            f"the user folder {path} of user {user_id!r}, who queued this job, is gone"
        )
    user = user_folder.getUserById(user_id)
    if user is None:
        raise UserNotFoundError(
            f"user {user_id!r}, who queued this job, no longer exists in "
            f"{path} (deleted since the job was queued)"
        )
    if aq_parent(user) is None:
        user = user.__of__(user_folder)
    newSecurityManager(request, user)
    return user
