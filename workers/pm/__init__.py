"""Project-management targets: a chat message becomes a task, and follow-ups act on it.

``workers.pm.flow`` is the one algorithm every tool shares (ledger, reconcile after
an ambiguous answer, degrade on refused assignees, links, confirmations); each tool
module (``jira``, ``github_issues``, ...) supplies a ``PmClient`` that speaks its API.
"""
