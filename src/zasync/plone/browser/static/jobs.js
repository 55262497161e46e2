/* zasync: the jobs control panel refreshes its figures, the progress of
 * running jobs and a job's state without reloading the page.
 *
 * The page's root element names, in data attributes, the URL of its
 * changing parts (rendered by the server, escaped there) and how often to
 * fetch them. Each part has an id: the fresh one replaces the old one.
 * Forms are never part of a part, so nothing a user types is replaced. No
 * refresh while the tab is hidden.
 */
(function () {
  "use strict";

  function start(root) {
    var url = root.getAttribute("data-zasync-parts");
    var every = parseInt(root.getAttribute("data-zasync-refresh"), 10) || 2000;
    var failures = 0;
    if (!url || !window.fetch || !window.DOMParser) {
      return;
    }

    function swap(html) {
      var fresh = new DOMParser().parseFromString(html, "text/html");
      var parts = fresh.querySelectorAll("[data-zasync-part]");
      for (var i = 0; i < parts.length; i++) {
        var old = document.getElementById(parts[i].id);
        if (old) {
          old.replaceWith(document.importNode(parts[i], true));
        }
      }
      root.setAttribute("data-zasync-refreshed", String(Date.now()));
    }

    function schedule() {
      // Back off while the server does not answer (up to a minute).
      var delay = Math.min(every * Math.pow(2, failures), 60000);
      window.setTimeout(tick, delay);
    }

    function tick() {
      if (document.hidden) {
        schedule();
        return;
      }
      window
        .fetch(url, {
          credentials: "same-origin",
          headers: { Accept: "text/html" },
          cache: "no-store",
        })
        .then(function (response) {
          if (!response.ok) {
            throw new Error("HTTP " + response.status);
          }
          return response.text();
        })
        .then(function (html) {
          failures = 0;
          swap(html);
        })
        .catch(function () {
          failures = Math.min(failures + 1, 5);
          root.setAttribute("data-zasync-refresh-failed", String(Date.now()));
        })
        .then(schedule);
    }

    schedule();
  }

  function init() {
    var roots = document.querySelectorAll("[data-zasync-refresh]");
    for (var i = 0; i < roots.length; i++) {
      start(roots[i]);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
