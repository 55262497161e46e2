"""zasync_first_job: a Plone add-on whose object action "Count words"
queues a job (zasync_first_job.jobs.count_words) for the current content
through zasync.plone. The walkthrough is zasync's docs/first-job.md."""
