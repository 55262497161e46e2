"""The add-on of docs/first-job.md (examples/first_job, installed by ``make
run``): its profile adds the "Count words" action; the action's page
queues zasync_first_job.jobs.count_words for the current item, as the user
who pressed the button; a real worker runs it and the count appears on the
page. A real Plone site, a real dispatcher on the test's database."""

from __future__ import annotations

import importlib.util
import re

import pytest
import transaction
from plone.app.testing import (
    SITE_OWNER_NAME,
    SITE_OWNER_PASSWORD,
    TEST_USER_ID,
    TEST_USER_NAME,
    TEST_USER_PASSWORD,
)
from plone.app.textfield.value import RichTextValue
from plone.base.utils import get_installer
from plone.testing import zope as zope_testing
from plone.testing.zope import Browser
from tests.plone.helpers import WAIT
from tests.plone.test_plone_docs import DOCS, run_markdown
from zasync_first_job import jobs
from zasync_first_job.testing import (
    FIRST_JOB_FUNCTIONAL_TESTING,
    FIRST_JOB_INTEGRATION_TESTING,
)
from zope.pytestlayer import fixture

from zasync.admin import find_job
from zasync.testing import wait_for_result

for _layer, _name in (
    (FIRST_JOB_INTEGRATION_TESTING, "fjintegration"),
    (FIRST_JOB_FUNCTIONAL_TESTING, "fjfunctional"),
):
    globals().update(
        fixture.create(
            _layer,
            session_fixture_name=f"_{_name}_session",
            class_fixture_name=f"_{_name}_class",
            function_fixture_name=f"_{_name}_test",
        )
    )

ADDON = "zasync_first_job"
EXAMPLES = DOCS.parent / "examples"


@pytest.fixture
def site(_fjintegration_session, _fjintegration_test):
    """A site with the add-on installed; no worker."""
    return _fjintegration_test["portal"]


@pytest.fixture
def working(_fjfunctional_session, _fjfunctional_test):
    """The same, with a worker on the test's own database."""
    return _fjfunctional_test


def browser(layer, user: str, password: str) -> Browser:
    b = Browser(layer["app"])
    b.handleErrors = False
    b.addHeader("Authorization", f"Basic {user}:{password}")
    return b


def owner_browser(layer) -> Browser:
    return browser(layer, SITE_OWNER_NAME, SITE_OWNER_PASSWORD)


def page(container, id_: str, title: str, html: str, description: str = ""):
    container.invokeFactory("Document", id_, title=title, description=description)
    doc = container[id_]
    doc.text = RichTextValue(html, "text/html", "text/x-html-safe")
    doc.reindexObject()
    return doc


@pytest.fixture
def texts(working):
    """A folder ``texts`` (2 words) in which the test user is an Editor,
    holding a page of 2 + 6 words and a page of 1 + 3 + 2 words; and a
    private page that the test user may not see (its roles blocked)."""
    portal = working["portal"]
    zope_testing.login(portal.getPhysicalRoot().acl_users, SITE_OWNER_NAME)
    try:
        portal.invokeFactory("Folder", "texts", title="Some texts")
        folder = portal["texts"]
        folder.manage_setLocalRoles(TEST_USER_ID, ["Editor"])
        folder.reindexObjectSecurity()
        page(
            folder,
            "one",
            "First page",
            "<p>one <b>two</b> three</p><p>four five six</p>",
        )
        page(folder, "two", "Second", "<ul><li>seven</li><li>eight</li></ul>", "a b c")
        hidden = page(folder, "hidden", "Hidden page", "<p>not counted at all</p>")
        hidden.__ac_local_roles_block__ = True
        hidden.reindexObjectSecurity()
    finally:
        zope_testing.logout()
    transaction.commit()
    return folder


def queued_job(layer, b: Browser):
    """The job whose id the page shows after the button was pressed."""
    job_id = re.search(
        r'id="first-job-queued">\s*Queued job <strong>(\w+)</strong>', b.contents
    ).group(1)
    transaction.begin()
    return find_job(layer["portal"]._p_jar, job_id)


# -- the profile ---------------------------------------------------------------


def object_buttons(portal) -> list[str]:
    return list(portal.portal_actions.object_buttons.objectIds())


def test_the_profile_adds_the_action_and_uninstalling_removes_it(site):
    installer = get_installer(site)
    assert installer.is_product_installed(ADDON)
    action = site.portal_actions.object_buttons.count_words
    assert action.url_expr == "string:${object_url}/@@count-words"
    assert action.permissions == ("Modify portal content",)

    assert installer.uninstall_product(ADDON)
    assert "count_words" not in object_buttons(site)
    assert installer.install_product(ADDON)
    assert "count_words" in object_buttons(site)


def load_create_site():
    """examples/create_site.py, the site set-up of make run and make cluster."""
    spec = importlib.util.spec_from_file_location(
        "create_site", EXAMPLES / "create_site.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_run_installs_it_in_an_existing_site_too(site):
    installer = get_installer(site)
    assert installer.uninstall_product(ADDON)
    app = site.getPhysicalRoot()
    created = load_create_site().ensure_site(app, site_id=site.getId())
    assert not created
    assert installer.is_product_installed(ADDON)
    assert "count_words" in object_buttons(site)


def test_the_add_ons_control_panel_installs_and_uninstalls_it(site):
    installer = get_installer(site)
    assert installer.get_install_profile(ADDON)["title"] == "zasync first job"
    assert installer.get_uninstall_profile(ADDON)["id"] == f"{ADDON}:uninstall"
    assert installer.get_product_version(ADDON) == "1.0"


def test_the_text_of_a_page_is_its_words_without_tags(site):
    zope_testing.login(site.getPhysicalRoot().acl_users, SITE_OWNER_NAME)
    try:
        doc = page(site, "p", "A title", "<p>x&amp;y <a href='/z'>link</a></p>", "d")
    finally:
        zope_testing.logout()
    assert jobs.text_of(doc).split() == ["A", "title", "d", "x&y", "link"]


# -- the button, the job, the worker ------------------------------------------


def test_an_editor_counts_a_folder_as_themselves(working, texts):
    b = browser(working, TEST_USER_NAME, TEST_USER_PASSWORD)
    b.open(texts.absolute_url())
    # The action is in the item's Actions menu.
    assert b.getLink(url=f"{texts.absolute_url()}/@@count-words")
    b.getLink(url="@@count-words").click()
    assert "Not counted yet." in b.contents
    b.getControl("Count words").click()

    job = queued_job(working, b)
    assert job.callable_name == "zasync_first_job.jobs.count_words"
    # An editor may not see the control panel: no link to it.
    assert 'id="first-job-link"' not in b.contents

    # The catalog answered as the editor: the hidden page is not counted.
    assert wait_for_result(job, WAIT) == 2 + 8 + 6
    b.open(f"{texts.absolute_url()}/@@count-words")
    count = b.contents[b.contents.index('id="first-job-count"') :]
    assert re.match(
        r'id="first-job-count">\s*Last count:\s*<strong>16</strong> words in\s*3 item',
        count,
    )
    transaction.begin()
    assert jobs.last_count(texts)["items"] == 3


def test_a_page_alone_and_the_job_in_the_control_panel(working, texts):
    b = owner_browser(working)
    b.open(f"{texts['one'].absolute_url()}/@@count-words")
    b.getControl("Count words").click()
    job = queued_job(working, b)
    assert wait_for_result(job, WAIT) == 8
    link = b.getLink(id="first-job-link")
    assert link.url.endswith(f"/@@async-jobs/{job.id}")
    link.click()
    assert job.id in b.contents and 'data-zasync-kind="completed"' in b.contents


def test_a_post_without_the_token_queues_nothing(working, texts):
    b = owner_browser(working)
    with pytest.raises(Exception, match="authenticator is invalid"):
        b.post(f"{texts.absolute_url()}/@@count-words", "count=1")
    transaction.begin()
    assert jobs.last_count(texts) is None


def test_who_may_not_edit_may_not_count(working, texts):
    transaction.begin()
    texts.manage_delLocalRoles([TEST_USER_ID])
    transaction.commit()
    b = browser(working, TEST_USER_NAME, TEST_USER_PASSWORD)
    b.handleErrors = True
    b.open(f"{texts.absolute_url()}/@@count-words")
    # Plone answers Unauthorized with its login form, never with the page.
    assert re.search(r"/(require_login|login|insufficient-privileges)", b.url)
    assert "Count words" not in b.contents


def test_the_walkthrough_runs(working):
    """docs/first-job.md's Python session, under the add-on's layer."""
    run_markdown(DOCS / "first-job.md", {"layer": working})
